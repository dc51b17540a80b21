package validation

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/serving/pkg/apis/config"

	"mp3converter/knative/model"
)

// ClusterDir is the folder of knative/ with the settings mp3converter needs
// in Knative's own namespaces. The kustomization does not apply them (its
// namespace: would move them into mp3converter); docs/deploy.md patches them
// in with kubectl.
const ClusterDir = "cluster"

// ServingDefaultsFile is Knative Serving's config-defaults as mp3converter
// needs it: func deploy sets no timeoutSeconds, so the cluster's
// revision-timeout-seconds is every function's request timeout.
const ServingDefaultsFile = ClusterDir + "/config-defaults.yaml"

// LoadServingDefaults reads the data of ServingDefaultsFile below
// knativeDir; nil when the file does not exist (Knative's own defaults).
func LoadServingDefaults(knativeDir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(knativeDir, ServingDefaultsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	objs, err := model.Decoder{}.DecodeFile(ServingDefaultsFile, b)
	if err != nil {
		return nil, err
	}
	if len(objs) != 1 || objs[0].Name != "config-defaults" || objs[0].Namespace != "knative-serving" {
		return nil, fmt.Errorf("%s: want the ConfigMap knative-serving/config-defaults alone", ServingDefaultsFile)
	}
	cm, ok := objs[0].Typed.(*corev1.ConfigMap)
	if !ok {
		return nil, fmt.Errorf("%s: not a ConfigMap", ServingDefaultsFile)
	}
	data := map[string]string{"max-revision-timeout-seconds": strconv.Itoa(MaxRevisionTimeoutSeconds)}
	maps.Copy(data, cm.Data)
	if _, err := config.NewDefaultsConfigFromMap(data); err != nil {
		return nil, fmt.Errorf("%s: %w", ServingDefaultsFile, err)
	}
	return cm.Data, nil
}
