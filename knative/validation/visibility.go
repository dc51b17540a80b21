package validation

import (
	"net/url"

	webfn "mp3converter/functions/web"

	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// PublicService is the one Knative Service reachable from outside the cluster: web, the entry
// point (the app and every public API path). The others are cluster-local: web's routes, the
// Broker and the functions themselves reach them by their cluster-local names.
const PublicService = "web"

const visibilityLabel = "networking.knative.dev/visibility"

// CheckVisibility checks that web is the only public Service and that its routes name the
// cluster-local address of each function, without a path (requests keep theirs).
func CheckVisibility(m *Manifests) *apis.FieldError {
	var errs *apis.FieldError
	var web *servingv1.Service
	for _, o := range m.Objects {
		svc, ok := o.Typed.(*servingv1.Service)
		if !ok {
			continue
		}
		local := svc.Labels[visibilityLabel] == "cluster-local"
		switch {
		case svc.Name == PublicService:
			web = svc
			if local {
				errs = errs.Also(o.Via(apis.ErrGeneric("web is the public entry point: it must not be cluster-local", "metadata.labels")))
			}
		case !local:
			errs = errs.Also(o.Via(apis.ErrGeneric(svc.Name+" must be cluster-local (label "+visibilityLabel+": cluster-local): only web is public, and routes to it", "metadata.labels")))
		}
	}
	if web == nil {
		return errs.Also(notFound("serving.knative.dev/v1", "Service", PublicService, "the public entry point"))
	}
	for _, fn := range sortedKeys(webfn.Upstreams) {
		setting := webfn.Upstreams[fn]
		raw, err := m.EnvValue(web, setting)
		u, perr := url.Parse(raw)
		want := "http://" + fn + "." + Namespace + ".svc.cluster.local"
		if err != nil || perr != nil || u.Scheme != "http" || u.Host != fn+"."+Namespace+".svc.cluster.local" || u.Path != "" {
			errs = errs.Also(m.ObjectOf(web).Via(apis.ErrInvalidValue(raw, "spec.template.spec.containers[0].env."+setting, "must be "+want)))
		}
	}
	return errs
}
