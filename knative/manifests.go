// Package knative holds the manifests that deploy mp3converter with
// `kubectl apply -k knative/`. The local stack reads its routing (the Broker
// and the Triggers) from the same files, embedded here, so the two never
// disagree.
package knative

import "embed"

// Manifests is every YAML file of this folder.
//
//go:embed *.yaml
var Manifests embed.FS
