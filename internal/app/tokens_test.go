package app

import (
	"context"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// A pod's tokens are asked for once and kept while it lives; once no worker
// holds the pod, or the token has expired, they are dropped (and a pod that
// asks again gets a new one).
func TestTokensForgottenWithTheirPod(t *testing.T) {
	cs := fake.NewClientset()
	requests := 0
	expires := time.Now().Add(time.Hour)
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		requests++
		return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
			Token: "t", ExpirationTimestamp: metav1.NewTime(expires)}}, nil
	})
	o := &apiObjects{client: cs, tokens: map[string]cachedToken{}}
	ctx := context.Background()
	a := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "uid-a"}}
	b := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", UID: "uid-b"}}
	for _, p := range []*corev1.Pod{a, b, a, b} {
		if tok, err := o.Token(ctx, p, "default", "", 3600); err != nil || tok != "t" {
			t.Fatalf("Token: %q %v", tok, err)
		}
	}
	if requests != 2 {
		t.Fatalf("%d token requests for two pods asked twice each", requests)
	}
	onlyA := func(uid types.UID) bool { return uid == a.UID }
	o.forgetTokens(onlyA, time.Now())
	if len(o.tokens) != 1 {
		t.Errorf("%d tokens kept after b's worker ended, want a's alone", len(o.tokens))
	}
	if _, err := o.Token(ctx, a, "default", "", 3600); err != nil || requests != 2 {
		t.Errorf("a's token was not kept: %d requests, %v", requests, err)
	}
	o.forgetTokens(onlyA, expires.Add(time.Second))
	if len(o.tokens) != 0 {
		t.Errorf("%d tokens kept past their expiry", len(o.tokens))
	}
}
