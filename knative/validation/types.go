package validation

import "encoding/json"

// The files of knative/ that are not Kubernetes objects (kustomization.yaml
// and its transformer configurations) and each function's func.yaml, decoded
// strictly: a field outside these types is an error. The Kubernetes objects
// themselves are typed in mp3converter/knative/model.

// Kustomization is the subset of kustomize's Kustomization (v1beta1) that
// knative/ may use. Decoding is strict: a field outside this subset is an
// error, so nobody adds a transformer the tests do not model.
type Kustomization struct {
	APIVersion       string            `json:"apiVersion"`
	Kind             string            `json:"kind"`
	Namespace        string            `json:"namespace,omitempty"`
	Labels           []KustomizeLabel  `json:"labels,omitempty"`
	Resources        []string          `json:"resources,omitempty"`
	Configurations   []string          `json:"configurations,omitempty"`
	GeneratorOptions *GeneratorOptions `json:"generatorOptions,omitempty"`
	SecretGenerator  []SecretGenerator `json:"secretGenerator,omitempty"`
	Images           []KustomizeImage  `json:"images,omitempty"`
}

// KustomizeLabel is one entry of labels:.
type KustomizeLabel struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

// GeneratorOptions is generatorOptions:, the options of every generator.
type GeneratorOptions struct {
	DisableNameSuffixHash bool `json:"disableNameSuffixHash,omitempty"`
}

// SecretGenerator is one entry of secretGenerator:.
type SecretGenerator struct {
	Name     string   `json:"name"`
	Envs     []string `json:"envs,omitempty"`
	Files    []string `json:"files,omitempty"`
	Literals []string `json:"literals,omitempty"`
	Type     string   `json:"type,omitempty"`
}

// KustomizeImage is one entry of images:.
type KustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// KustomizeConfig is a transformer configuration file (configurations:);
// knative/ uses only nameReference.
type KustomizeConfig struct {
	NameReference []NameReference `json:"nameReference"`
}

// NameReference tells kustomize where objects of one kind are referred to.
type NameReference struct {
	Kind       string           `json:"kind"`
	Version    string           `json:"version,omitempty"`
	Group      string           `json:"group,omitempty"`
	FieldSpecs []KustomizeField `json:"fieldSpecs"`
}

// KustomizeField is a fieldSpec of a transformer configuration.
type KustomizeField struct {
	Group   string `json:"group,omitempty"`
	Version string `json:"version,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Path    string `json:"path"`
	Create  bool   `json:"create,omitempty"`
}

// FuncYAML is a function's func.yaml (Knative Functions specVersion 0.36),
// with the keys of knative.dev/func's pkg/functions.Function.
type FuncYAML struct {
	SpecVersion string     `json:"specVersion"`
	Name        string     `json:"name"`
	Runtime     string     `json:"runtime"`
	Domain      string     `json:"domain,omitempty"`
	Registry    string     `json:"registry,omitempty"`
	Image       string     `json:"image,omitempty"`
	ImageDigest string     `json:"imageDigest,omitempty"`
	Created     string     `json:"created,omitempty"`
	Invoke      string     `json:"invoke,omitempty"`
	Build       FuncBuild  `json:"build,omitempty"`
	Run         FuncRun    `json:"run,omitempty"`
	Deploy      FuncDeploy `json:"deploy,omitempty"`
}

// FuncBuild is func.yaml's build section.
type FuncBuild struct {
	Git           map[string]string `json:"git,omitempty"`
	BuilderImages map[string]string `json:"builderImages,omitempty"`
	Buildpacks    []string          `json:"buildpacks,omitempty"`
	Builder       string            `json:"builder,omitempty"`
	BuildEnvs     []FuncEnv         `json:"buildEnvs,omitempty"`
	PVCSize       string            `json:"pvcSize,omitempty"`
	BaseImage     string            `json:"baseImage,omitempty"`
}

// FuncRun is func.yaml's run section.
type FuncRun struct {
	Volumes      []FuncVolume `json:"volumes,omitempty"`
	Envs         []FuncEnv    `json:"envs,omitempty"`
	StartTimeout string       `json:"startTimeout,omitempty"`
}

// FuncVolume is one run.volumes entry: a Secret, ConfigMap, claim or emptyDir
// mounted at path.
type FuncVolume struct {
	Path                  *string       `json:"path,omitempty"`
	Secret                *string       `json:"secret,omitempty"`
	ConfigMap             *string       `json:"configMap,omitempty"`
	PersistentVolumeClaim *FuncClaim    `json:"persistentVolumeClaim,omitempty"`
	EmptyDir              *FuncEmptyDir `json:"emptyDir,omitempty"`
}

// FuncClaim is a run.volumes persistentVolumeClaim.
type FuncClaim struct {
	ClaimName *string `json:"claimName,omitempty"`
	ReadOnly  bool    `json:"readOnly,omitempty"`
}

// FuncEmptyDir is a run.volumes emptyDir.
type FuncEmptyDir struct {
	Medium    string  `json:"medium,omitempty"`
	SizeLimit *string `json:"sizeLimit,omitempty"`
}

// FuncEnv is one env entry: a plain value, {{ env:NAME }}, {{ secret:name:key }}
// or {{ configMap:name:key }}.
type FuncEnv struct {
	Name  *string `json:"name,omitempty"`
	Value *string `json:"value,omitempty"`
}

// FuncDeploy is func.yaml's deploy section.
type FuncDeploy struct {
	Namespace          string              `json:"namespace,omitempty"`
	Remote             bool                `json:"remote,omitempty"`
	Annotations        map[string]string   `json:"annotations,omitempty"`
	Options            FuncOptions         `json:"options,omitempty"`
	Labels             []FuncLabel         `json:"labels,omitempty"`
	HealthEndpoints    FuncHealthEndpoints `json:"healthEndpoints,omitempty"`
	ServiceAccountName string              `json:"serviceAccountName,omitempty"`
	Image              string              `json:"image,omitempty"`
	Subscriptions      []json.RawMessage   `json:"subscriptions,omitempty"`
}

// FuncOptions is deploy.options: what func deploy turns into autoscaling
// annotations, container resources and containerConcurrency.
type FuncOptions struct {
	Scale     *FuncScale     `json:"scale,omitempty"`
	Resources *FuncResources `json:"resources,omitempty"`
}

// FuncScale is deploy.options.scale.
type FuncScale struct {
	Min         *int64   `json:"min,omitempty"`
	Max         *int64   `json:"max,omitempty"`
	Metric      *string  `json:"metric,omitempty"`
	Target      *float64 `json:"target,omitempty"`
	Utilization *float64 `json:"utilization,omitempty"`
}

// FuncResources is deploy.options.resources.
type FuncResources struct {
	Requests *FuncResourceList `json:"requests,omitempty"`
	Limits   *FuncLimits       `json:"limits,omitempty"`
}

// FuncResourceList is deploy.options.resources.requests.
type FuncResourceList struct {
	CPU    *string `json:"cpu,omitempty"`
	Memory *string `json:"memory,omitempty"`
}

// FuncLimits is deploy.options.resources.limits.
type FuncLimits struct {
	CPU         *string `json:"cpu,omitempty"`
	Memory      *string `json:"memory,omitempty"`
	Concurrency *int64  `json:"concurrency,omitempty"`
}

// FuncLabel is one deploy.labels entry: a value or {{ env:NAME }}.
type FuncLabel struct {
	Key   *string `json:"key"`
	Value *string `json:"value,omitempty"`
}

// FuncHealthEndpoints is deploy.healthEndpoints.
type FuncHealthEndpoints struct {
	Liveness  string `json:"liveness,omitempty"`
	Readiness string `json:"readiness,omitempty"`
}
