package model

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/pkg/tracker"
)

// Typed mirrors of the custom resources knative/ uses whose Go packages are
// not imported here (knative.dev/eventing, eventing-rabbitmq, the RabbitMQ
// cluster-operator). Field names and JSON keys follow the CRD schemas in
// knative/validation/testdata/crds; strict decoding into them rejects any
// field the schemas do not define (Knative's Trigger schema itself preserves
// unknown fields, its Go types do not).

// DeliverySpec is eventing's duck/v1 DeliverySpec (knative-v1.15).
type DeliverySpec struct {
	DeadLetterSink *duckv1.Destination `json:"deadLetterSink,omitempty"`
	Retry          *int32              `json:"retry,omitempty"`
	Timeout        *string             `json:"timeout,omitempty"`
	BackoffPolicy  *string             `json:"backoffPolicy,omitempty"`
	BackoffDelay   *string             `json:"backoffDelay,omitempty"`
	RetryAfterMax  *string             `json:"retryAfterMax,omitempty"`
	Format         *string             `json:"format,omitempty"`
}

// Broker is an eventing.knative.dev/v1 Broker.
type Broker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BrokerSpec `json:"spec,omitempty"`
}

// BrokerSpec is the spec of a Broker.
type BrokerSpec struct {
	Config   *duckv1.KReference `json:"config,omitempty"`
	Delivery *DeliverySpec      `json:"delivery,omitempty"`
}

// Trigger is an eventing.knative.dev/v1 Trigger.
type Trigger struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              TriggerSpec `json:"spec,omitempty"`
}

// TriggerSpec is the spec of a Trigger. Filters (the new filter dialect) is
// decoded so that the rules can refuse it: the RabbitMQ broker ignores it.
type TriggerSpec struct {
	Broker     string                   `json:"broker,omitempty"`
	BrokerRef  *duckv1.KReference       `json:"brokerRef,omitempty"`
	Filter     *TriggerFilter           `json:"filter,omitempty"`
	Filters    []SubscriptionsAPIFilter `json:"filters,omitempty"`
	Subscriber duckv1.Destination       `json:"subscriber"`
	Delivery   *DeliverySpec            `json:"delivery,omitempty"`
}

// TriggerFilter is the exact-match attribute filter.
type TriggerFilter struct {
	Attributes map[string]string `json:"attributes,omitempty"`
}

// SubscriptionsAPIFilter is one expression of spec.filters.
type SubscriptionsAPIFilter struct {
	All    []SubscriptionsAPIFilter `json:"all,omitempty"`
	Any    []SubscriptionsAPIFilter `json:"any,omitempty"`
	Not    *SubscriptionsAPIFilter  `json:"not,omitempty"`
	Exact  map[string]string        `json:"exact,omitempty"`
	Prefix map[string]string        `json:"prefix,omitempty"`
	Suffix map[string]string        `json:"suffix,omitempty"`
	CESQL  string                   `json:"cesql,omitempty"`
}

// SinkBinding is a sources.knative.dev/v1 SinkBinding.
type SinkBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              SinkBindingSpec `json:"spec,omitempty"`
}

// SinkBindingSpec is the spec of a SinkBinding: duck SourceSpec plus
// BindingSpec.
type SinkBindingSpec struct {
	Sink                duckv1.Destination          `json:"sink,omitempty"`
	CloudEventOverrides *duckv1.CloudEventOverrides `json:"ceOverrides,omitempty"`
	Subject             tracker.Reference           `json:"subject"`
}

// PingSource is a sources.knative.dev/v1 PingSource: it sends an event of
// type dev.knative.sources.ping to its sink on a cron schedule.
type PingSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PingSourceSpec `json:"spec,omitempty"`
}

// PingSourceSpec is the spec of a PingSource: duck SourceSpec plus the
// schedule and the event's data.
type PingSourceSpec struct {
	Sink                duckv1.Destination          `json:"sink,omitempty"`
	CloudEventOverrides *duckv1.CloudEventOverrides `json:"ceOverrides,omitempty"`
	Schedule            string                      `json:"schedule,omitempty"`
	Timezone            string                      `json:"timezone,omitempty"`
	ContentType         string                      `json:"contentType,omitempty"`
	Data                string                      `json:"data,omitempty"`
	DataBase64          string                      `json:"dataBase64,omitempty"`
}

// RabbitmqBrokerConfig is eventing-rabbitmq's eventing.knative.dev/v1alpha1
// RabbitmqBrokerConfig.
type RabbitmqBrokerConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RabbitmqBrokerConfigSpec `json:"spec,omitempty"`
}

// RabbitmqBrokerConfigSpec is the spec of a RabbitmqBrokerConfig.
type RabbitmqBrokerConfigSpec struct {
	RabbitmqClusterReference *RabbitmqClusterReference `json:"rabbitmqClusterReference,omitempty"`
	QueueType                string                    `json:"queueType,omitempty"`
	Vhost                    string                    `json:"vhost,omitempty"`
}

// RabbitmqClusterReference points at a RabbitmqCluster (or at a Secret with
// the connection details of an external RabbitMQ).
type RabbitmqClusterReference struct {
	Name             string                       `json:"name,omitempty"`
	Namespace        string                       `json:"namespace,omitempty"`
	ConnectionSecret *corev1.LocalObjectReference `json:"connectionSecret,omitempty"`
}

// RabbitmqCluster is the RabbitMQ cluster-operator's rabbitmq.com/v1beta1
// RabbitmqCluster (v2.5.0). The pod-template override and the secret
// backend are kept raw: the schema check covers them.
type RabbitmqCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RabbitmqClusterSpec `json:"spec,omitempty"`
}

// RabbitmqClusterSpec is the spec of a RabbitmqCluster.
type RabbitmqClusterSpec struct {
	Replicas                      *int32                        `json:"replicas,omitempty"`
	Image                         string                        `json:"image,omitempty"`
	ImagePullSecrets              []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	Service                       *RabbitmqClusterServiceSpec   `json:"service,omitempty"`
	Persistence                   *RabbitmqClusterPersistence   `json:"persistence,omitempty"`
	Resources                     *corev1.ResourceRequirements  `json:"resources,omitempty"`
	Affinity                      *corev1.Affinity              `json:"affinity,omitempty"`
	Tolerations                   []corev1.Toleration           `json:"tolerations,omitempty"`
	Rabbitmq                      *RabbitmqClusterConfiguration `json:"rabbitmq,omitempty"`
	TLS                           *RabbitmqClusterTLS           `json:"tls,omitempty"`
	Override                      json.RawMessage               `json:"override,omitempty"`
	SkipPostDeploySteps           bool                          `json:"skipPostDeploySteps,omitempty"`
	TerminationGracePeriodSeconds *int64                        `json:"terminationGracePeriodSeconds,omitempty"`
	DelayStartSeconds             *int32                        `json:"delayStartSeconds,omitempty"`
	SecretBackend                 json.RawMessage               `json:"secretBackend,omitempty"`
}

// RabbitmqClusterServiceSpec is spec.service of a RabbitmqCluster.
type RabbitmqClusterServiceSpec struct {
	Type        corev1.ServiceType `json:"type,omitempty"`
	Annotations map[string]string  `json:"annotations,omitempty"`
}

// RabbitmqClusterPersistence is spec.persistence of a RabbitmqCluster.
type RabbitmqClusterPersistence struct {
	StorageClassName *string            `json:"storageClassName,omitempty"`
	Storage          *resource.Quantity `json:"storage,omitempty"`
}

// RabbitmqClusterConfiguration is spec.rabbitmq: additions to rabbitmq.conf.
type RabbitmqClusterConfiguration struct {
	AdditionalPlugins []string `json:"additionalPlugins,omitempty"`
	AdditionalConfig  string   `json:"additionalConfig,omitempty"`
	AdvancedConfig    string   `json:"advancedConfig,omitempty"`
	EnvConfig         string   `json:"envConfig,omitempty"`
}

// RabbitmqClusterTLS is spec.tls of a RabbitmqCluster.
type RabbitmqClusterTLS struct {
	SecretName             string `json:"secretName,omitempty"`
	CaSecretName           string `json:"caSecretName,omitempty"`
	DisableNonTLSListeners bool   `json:"disableNonTLSListeners,omitempty"`
}
