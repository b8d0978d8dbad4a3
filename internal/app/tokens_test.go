package app

import (
	"context"
	"errors"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// A token refused because the apiserver's copy of the pod is not yet bound
// to the node is asked for again within the sync, a moment later; any other
// refusal is the caller's at once, and a lag that lasts gives up.
func TestTokenRetriedWhileTheApiserverLags(t *testing.T) {
	lag := apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "default",
		errors.New("node requested token bound to a pod scheduled on a different node"))
	other := apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "default",
		errors.New("unable to create new content in namespace ns because it is being terminated"))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "uid-a"}}
	for _, tc := range []struct {
		name         string
		refusals     int
		refusal      error
		wantRequests int
		wantErr      bool
	}{
		{"lag then bound", 2, lag, 3, false},
		{"another refusal", 5, other, 1, true},
		{"a lag that lasts", 100, lag, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			requests := 0
			cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
				requests++
				if requests <= tc.refusals {
					return true, nil, tc.refusal
				}
				return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
					Token: "t", ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour))}}, nil
			})
			o := &apiObjects{client: cs, tokens: map[string]cachedToken{}}
			_, err := o.Token(context.Background(), pod, "default", "", 3600)
			if (err != nil) != tc.wantErr || requests != tc.wantRequests {
				t.Errorf("err %v after %d requests; want error %v after %d", err, requests, tc.wantErr, tc.wantRequests)
			}
		})
	}
}
