// Package podsource delivers the pods this node should run: the pods the
// apiserver binds to it (one informer filtered by spec.nodeName).
package podsource

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Handler receives pods. Update may be called many times for the same pod.
type Handler interface {
	Update(pod *corev1.Pod)
	Delete(pod *corev1.Pod)
}

// API watches the pods bound to one node. Mirror pods are not delivered:
// their static pods come from the Static source.
type API struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   corelisters.PodLister
}

// NewAPI builds the watch; Run starts it.
func NewAPI(client kubernetes.Interface, nodeName string) *API {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	}))
	inf := f.Core().V1().Pods()
	return &API{factory: f, informer: inf.Informer(), lister: inf.Lister()}
}

// Lister lists this node's pods as the apiserver has them.
func (a *API) Lister() corelisters.PodLister { return a.lister }

// Run delivers pods to h until ctx ends. It returns once the first list has
// been delivered.
func (a *API) Run(ctx context.Context, h Handler) error {
	_, err := a.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod := obj.(*corev1.Pod); !IsMirror(pod) {
				h.Update(pod)
			}
		},
		UpdateFunc: func(_, obj any) {
			if pod := obj.(*corev1.Pod); !IsMirror(pod) {
				h.Update(pod)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok && !IsMirror(pod) {
				h.Delete(pod)
			}
		},
	})
	if err != nil {
		return err
	}
	a.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.informer.HasSynced) {
		return fmt.Errorf("pod watch did not sync: %w", ctx.Err())
	}
	return nil
}
