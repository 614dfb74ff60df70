// Package deploy_test checks the deployment files of deploy/ without a container engine or a
// cluster: the Kubernetes overlays render with kubectl kustomize and decode strictly into the
// API types, the compose file names only things that exist, every MFA_* variable is one that
// pkg/config knows, the Dockerfile builds only binaries `make build` builds, and the proxies
// route exactly as docs/architecture.md says.
package deploy_test

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/config"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// pending lists variables that the deploy files set ahead of the code: a branch that is not
// merged yet adds them to pkg/config. They are accepted whether or not config.Variables has
// them; delete an entry once config.Variables has it (TestPendingVariables says when).
var pending = map[string]string{}

// secretVars are the variables that hold secrets: never a plain value or a ConfigMap key.
var secretVars = []string{"MFA_SECRET_KEY", "MFA_SECRET_KEYS", "MFA_JWT_SECRET", "MFA_SIGNING_KEY", "MFA_MONGODB_URI", "MFA_PUSH_WEBHOOK_SECRET",
	// The notifier's: the SMTP URL carries the mail server's password.
	"MFA_DELIVERY_KEY", "MFA_SMTP_URL", "MFA_SMS_WEBHOOK_SECRET", "MFA_TWILIO_AUTH_TOKEN"}

// serviceBinaries are the service commands of the image (the Dockerfile builds a health probe too).
var serviceBinaries = []string{"initiation", "status", "device-registry", "notifier", "mobile-bridge"}

func known(name string) bool {
	if _, ok := pending[name]; ok {
		return true
	}
	return slices.ContainsFunc(config.Variables, func(v config.Variable) bool { return v.Name == name })
}

func TestPendingVariables(t *testing.T) {
	for name := range pending {
		if slices.ContainsFunc(config.Variables, func(v config.Variable) bool { return v.Name == name }) {
			t.Errorf("%s is in config.Variables now: delete it from pending in deploy_test.go", name)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- docs/architecture.md: what each service requires, and the routing table ----

var backticked = regexp.MustCompile("`([^`]+)`")

// docTable returns the rows of the markdown table whose header line starts with header, in
// the "Running the services separately" section: first cell → the backticked words of the
// cell at column col.
func docTable(t *testing.T, header string, key, col int) map[string][]string {
	t.Helper()
	doc := string(readFile(t, "../docs/architecture.md"))
	_, section, ok := strings.Cut(doc, "## Running the services separately")
	if !ok {
		t.Fatal(`docs/architecture.md has no "Running the services separately" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string][]string{}
	in := false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case in && strings.HasPrefix(line, "|---"):
		case in && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			name := strings.Fields(cells[key])[0]
			for _, m := range backticked.FindAllStringSubmatch(cells[col], -1) {
				rows[name] = append(rows[name], m[1])
			}
		default:
			in = false
		}
	}
	if len(rows) == 0 {
		t.Fatalf("docs/architecture.md: no table %q", header)
	}
	return rows
}

// required: service → the variables it requires.
func required(t *testing.T) map[string][]string {
	return docTable(t, "| service | requires |", 0, 1)
}

// routes: path (without a trailing slash) → service.
func routes(t *testing.T) map[string]string {
	m := map[string]string{}
	for svc, paths := range docTable(t, "| path | service |", 1, 0) {
		for _, p := range paths {
			m[strings.TrimSuffix(p, "/")] = svc
		}
	}
	return m
}

// ---- Kubernetes ----

// newObject returns an empty object of the API type of kind, for strict decoding.
func newObject(kind string) (any, bool) {
	switch kind {
	case "Namespace":
		return &corev1.Namespace{}, true
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "ConfigMap":
		return &corev1.ConfigMap{}, true
	case "Secret":
		return &corev1.Secret{}, true
	case "Service":
		return &corev1.Service{}, true
	case "Deployment":
		return &appsv1.Deployment{}, true
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "Ingress":
		return &networkingv1.Ingress{}, true
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	}
	return nil, false
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeAll decodes every YAML document of b strictly into its API type, by kind.
func decodeAll(t *testing.T, what string, b []byte) []any {
	t.Helper()
	var objs []any
	for _, doc := range docSep.Split(string(b), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		obj, ok := newObject(meta.Kind)
		if !ok {
			t.Errorf("%s: %s %s: a kind this test does not know; add its API type to newObject", what, meta.Kind, meta.Metadata.Name)
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", what, meta.Kind, meta.Metadata.Name, err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

func overlays(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("k8s/overlays/*/kustomization.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays under k8s/overlays (%v)", err)
	}
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	return dirs
}

func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is not on PATH; the manifest checks need `kubectl kustomize`")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	return out
}

// rendered is one overlay's objects by kind.
type rendered struct {
	deployments []*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses   []*networkingv1.Ingress
	policies    []*networkingv1.NetworkPolicy
	secrets     []*corev1.Secret
}

func render(t *testing.T, dir string) rendered {
	r := rendered{services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}}
	for _, o := range decodeAll(t, dir, kustomize(t, dir)) {
		switch o := o.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas[o.Spec.ScaleTargetRef.Name] = o
		case *networkingv1.Ingress:
			r.ingresses = append(r.ingresses, o)
		case *networkingv1.NetworkPolicy:
			r.policies = append(r.policies, o)
		case *corev1.Secret:
			r.secrets = append(r.secrets, o)
		}
	}
	return r
}

// secretExampleKeys are the keys of the documented Secret template.
func secretExampleKeys(t *testing.T) (string, map[string]bool) {
	t.Helper()
	objs := decodeAll(t, "k8s/examples/secret.example.yaml", readFile(t, "k8s/examples/secret.example.yaml"))
	if len(objs) != 1 {
		t.Fatalf("k8s/examples/secret.example.yaml: want one Secret, got %d objects", len(objs))
	}
	s, ok := objs[0].(*corev1.Secret)
	if !ok {
		t.Fatalf("k8s/examples/secret.example.yaml: want a Secret, got %T", objs[0])
	}
	keys := map[string]bool{}
	for k := range s.StringData {
		keys[k] = true
	}
	for k := range s.Data {
		keys[k] = true
	}
	return s.Name, keys
}

func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKustomizeOverlays(t *testing.T) {
	req := required(t)
	secretName, secretKeys := secretExampleKeys(t)
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			r := render(t, dir)
			if len(r.secrets) > 0 {
				t.Errorf("the overlay renders Secret %s: secrets are created out of band (k8s/examples/secret.example.yaml is a template)", r.secrets[0].Name)
			}
			for _, cm := range r.configMaps {
				for k := range cm.Data {
					if !known(k) {
						t.Errorf("ConfigMap %s: %s is not a variable of pkg/config", cm.Name, k)
					}
					if slices.Contains(secretVars, k) {
						t.Errorf("ConfigMap %s: %s is a secret; use a secretKeyRef", cm.Name, k)
					}
				}
			}
			seen := map[string]bool{}
			for _, d := range r.deployments {
				svc := checkDeployment(t, r, d, req, secretName, secretKeys)
				seen[svc] = true
			}
			for _, svc := range serviceBinaries {
				if !seen[svc] {
					t.Errorf("no Deployment runs %s", svc)
				}
			}
			checkIngress(t, r)
			checkNetworkPolicies(t, r)
		})
	}
}

// checkDeployment checks one Deployment and returns the service it runs.
func checkDeployment(t *testing.T, r rendered, d *appsv1.Deployment, req map[string][]string, secretName string, secretKeys map[string]bool) string {
	t.Helper()
	name := "Deployment " + d.Name
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", name)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", name)
	}
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Errorf("%s: runAsUser 0", name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (the services never call the API)", name)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container, got %d", name, len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/usr/local/bin/") {
		t.Fatalf("%s: command %q: want /usr/local/bin/<service>", name, c.Command)
	}
	svc := strings.TrimPrefix(c.Command[0], "/usr/local/bin/")
	if !slices.Contains(serviceBinaries, svc) {
		t.Errorf("%s: command %s is not a service binary of the image (%v)", name, c.Command[0], serviceBinaries)
	}
	if i := strings.LastIndex(c.Image, ":"); i < 0 || strings.Contains(c.Image[i:], "/") || strings.HasSuffix(c.Image, ":latest") {
		if !strings.Contains(c.Image, "@sha256:") {
			t.Errorf("%s: image %q: pin a tag (not latest) or a digest", name, c.Image)
		}
	}

	// Probes on /healthz at the HTTP port.
	var httpPort int32
	for _, p := range c.Ports {
		if p.Name == "http" {
			httpPort = p.ContainerPort
		}
	}
	if httpPort == 0 {
		t.Errorf("%s: no container port named http", name)
	}
	for pname, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
			t.Errorf("%s: %s must be GET /healthz", name, pname)
			continue
		}
		if port := p.HTTPGet.Port; port.StrVal != "http" && port.IntVal != httpPort {
			t.Errorf("%s: %s probes port %s, not the http port", name, pname, port.String())
		}
	}

	// Resources.
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("%s: no %s request", name, res)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("%s: no memory limit", name)
	}

	// Container security context.
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no container securityContext", name)
	default:
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem must be true", name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", name)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			t.Errorf("%s: container runAsNonRoot false", name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities must drop ALL and add none", name)
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: container seccompProfile %s", name, sc.SeccompProfile.Type)
		}
	}

	// Environment: known variables, secrets by secretKeyRef only, config from ConfigMaps.
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			t.Errorf("%s: envFrom secretRef %s: reference each secret key by name (secretKeyRef)", name, ef.SecretRef.Name)
		case ef.ConfigMapRef != nil:
			cm, ok := r.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s is not rendered", name, ef.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "MFA_") && !known(e.Name) {
			t.Errorf("%s: %s is not a variable of pkg/config", name, e.Name)
		}
		ref := (*corev1.SecretKeySelector)(nil)
		if e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
		if slices.Contains(secretVars, e.Name) {
			if ref == nil || e.Value != "" {
				t.Errorf("%s: %s is a secret: set it with valueFrom.secretKeyRef only", name, e.Name)
			}
		}
		if ref != nil {
			if ref.Name != secretName || !secretKeys[ref.Key] {
				t.Errorf("%s: %s refers to secret %s key %s, which k8s/examples/secret.example.yaml does not document", name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = "(secret)"
			continue
		}
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			env[e.Name] = "(configmap)"
			continue
		}
		env[e.Name] = e.Value
	}
	for _, v := range req[svc] {
		if _, ok := env[v]; !ok {
			t.Errorf("%s: %s requires %s (docs/architecture.md), which is not set", name, svc, v)
		}
	}
	if env["MFA_STORE"] == "mongo" && env["MFA_MONGODB_URI"] == "" {
		t.Errorf("%s: MFA_STORE=mongo without MFA_MONGODB_URI", name)
	}

	// A Service, a PodDisruptionBudget and an HPA for every Deployment.
	labels := d.Spec.Template.Labels
	if s, ok := r.services[d.Name]; !ok || !selects(s.Spec.Selector, labels) {
		t.Errorf("%s: no Service %s selecting its pods", name, d.Name)
	}
	if !slices.ContainsFunc(r.pdbs, func(p *policyv1.PodDisruptionBudget) bool {
		return p.Spec.Selector != nil && selects(p.Spec.Selector.MatchLabels, labels)
	}) {
		t.Errorf("%s: no PodDisruptionBudget selects its pods", name)
	}
	if h, ok := r.hpas[d.Name]; !ok || h.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("%s: no HorizontalPodAutoscaler", name)
	} else if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		t.Errorf("%s: HPA replicas min %v max %d", name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	return svc
}

// checkIngress: the Ingress routes exactly the paths of docs/architecture.md to the services
// that run them, with SSE unbuffered.
func checkIngress(t *testing.T, r rendered) {
	t.Helper()
	if len(r.ingresses) != 1 {
		t.Fatalf("want one Ingress, got %d", len(r.ingresses))
	}
	ing := r.ingresses[0]
	if ing.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
		t.Errorf("Ingress %s: SSE needs nginx.ingress.kubernetes.io/proxy-buffering: off", ing.Name)
	}
	// Service name → the binary its Deployment runs.
	runs := map[string]string{}
	for _, d := range r.deployments {
		for name, s := range r.services {
			if selects(s.Spec.Selector, d.Spec.Template.Labels) && len(d.Spec.Template.Spec.Containers) > 0 {
				runs[name] = strings.TrimPrefix(strings.Join(d.Spec.Template.Spec.Containers[0].Command, " "), "/usr/local/bin/")
			}
		}
	}
	got := map[string]string{}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			b := p.Backend.Service
			if b == nil {
				t.Errorf("Ingress path %s: no service backend", p.Path)
				continue
			}
			s, ok := r.services[b.Name]
			if !ok {
				t.Errorf("Ingress path %s: Service %s is not rendered", p.Path, b.Name)
				continue
			}
			if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool {
				return (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
			}) {
				t.Errorf("Ingress path %s: Service %s has no port %v", p.Path, b.Name, b.Port)
			}
			got[strings.TrimSuffix(p.Path, "/")] = runs[b.Name]
		}
	}
	compareRoutes(t, "Ingress", got, routes(t))
}

func compareRoutes(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for p, svc := range want {
		if got[p] != svc {
			t.Errorf("%s: %s goes to %q, docs/architecture.md says %s", what, p, got[p], svc)
		}
	}
	for p, svc := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: routes %s to %s, which docs/architecture.md does not list", what, p, svc)
		}
	}
}

// egressPolicies are the egress NetworkPolicies that must select each service's pods, besides
// the default deny, and no others: DNS and NATS for all, MongoDB for the two with a store, the
// push wake-up webhook for the status service, the mail server and the SMS provider for the
// notifier (and nothing else for it: it holds the mail and SMS credentials).
var egressPolicies = map[string][]string{
	"initiation":      {"mfaflow-allow-egress-dns", "mfaflow-allow-egress-nats"},
	"mobile-bridge":   {"mfaflow-allow-egress-dns", "mfaflow-allow-egress-nats"},
	"device-registry": {"mfaflow-allow-egress-dns", "mfaflow-allow-egress-mongodb", "mfaflow-allow-egress-nats"},
	"status":          {"mfaflow-allow-egress-dns", "mfaflow-allow-egress-mongodb", "mfaflow-allow-egress-nats", "mfaflow-allow-egress-push-webhook"},
	"notifier":        {"mfaflow-allow-egress-dns", "mfaflow-allow-egress-nats", "mfaflow-allow-egress-sms", "mfaflow-allow-egress-smtp"},
}

// selectsPod reports whether a policy's pod selector selects a pod with labels.
func selectsPod(t *testing.T, np *networkingv1.NetworkPolicy, labels map[string]string) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Errorf("NetworkPolicy %s: pod selector: %v", np.Name, err)
		return false
	}
	return sel.Matches(k8slabels.Set(labels))
}

// checkNetworkPolicies: a default deny for every mfaflow pod, ingress only from selected peers,
// egress only to named peers on named ports, and each Deployment's pods selected by exactly the
// egress policies its service needs (egressPolicies).
func checkNetworkPolicies(t *testing.T, r rendered) {
	t.Helper()
	var deny []*networkingv1.NetworkPolicy
	for _, np := range r.policies {
		if len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			deny = append(deny, np)
		}
		for _, in := range np.Spec.Ingress {
			if len(in.From) == 0 {
				t.Errorf("NetworkPolicy %s: an ingress rule from anywhere", np.Name)
			}
			for _, peer := range in.From {
				if peer.IPBlock != nil || (peer.PodSelector == nil && peer.NamespaceSelector == nil) {
					t.Errorf("NetworkPolicy %s: ingress from an unselected peer", np.Name)
				}
			}
		}
		for _, out := range np.Spec.Egress {
			if len(out.To) == 0 {
				t.Errorf("NetworkPolicy %s: an egress rule to anywhere", np.Name)
			}
			if len(out.Ports) == 0 {
				t.Errorf("NetworkPolicy %s: an egress rule to every port", np.Name)
			}
			for _, peer := range out.To {
				switch {
				case peer.IPBlock != nil:
					if prefixLen(t, np.Name, peer.IPBlock.CIDR) == 0 {
						t.Errorf("NetworkPolicy %s: egress to %s, every address", np.Name, peer.IPBlock.CIDR)
					}
				case peer.PodSelector == nil && peer.NamespaceSelector == nil:
					t.Errorf("NetworkPolicy %s: egress to an unselected peer", np.Name)
				}
			}
		}
	}
	if len(deny) == 0 {
		t.Error("no default-deny NetworkPolicy (Ingress and Egress, no rules)")
	}
	for _, d := range r.deployments {
		labels := d.Spec.Template.Labels
		if !slices.ContainsFunc(deny, func(np *networkingv1.NetworkPolicy) bool { return selectsPod(t, np, labels) }) {
			t.Errorf("Deployment %s: no default-deny NetworkPolicy selects its pods", d.Name)
		}
		var got []string
		for _, np := range r.policies {
			if len(np.Spec.Egress) > 0 && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) && selectsPod(t, np, labels) {
				got = append(got, np.Name)
			}
		}
		slices.Sort(got)
		if len(got) == 0 {
			t.Errorf("Deployment %s: no egress NetworkPolicy selects its pods: they reach nothing, not even DNS", d.Name)
			continue
		}
		svc := ""
		if len(d.Spec.Template.Spec.Containers) > 0 && len(d.Spec.Template.Spec.Containers[0].Command) > 0 {
			svc = strings.TrimPrefix(d.Spec.Template.Spec.Containers[0].Command[0], "/usr/local/bin/")
		}
		want, ok := egressPolicies[svc]
		if !ok {
			t.Errorf("Deployment %s runs %q, which egressPolicies does not know", d.Name, svc)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("Deployment %s (%s): egress allowed by %v, want %v", d.Name, svc, got, want)
		}
	}
}

// prefixLen is the prefix length of a CIDR (-1 when it does not parse, which is reported).
func prefixLen(t *testing.T, policy, cidr string) int {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Errorf("NetworkPolicy %s: ipBlock %q: %v", policy, cidr, err)
		return -1
	}
	return p.Bits()
}

// TestSecretTemplateNotInKustomizations: the Secret template is documentation, never rendered.
func TestSecretTemplateNotInKustomizations(t *testing.T) {
	secretExampleKeys(t)
	err := filepath.WalkDir("k8s", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		var k struct {
			Resources  []string `json:"resources"`
			Components []string `json:"components"`
		}
		if err := yaml.Unmarshal(readFile(t, path), &k); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		for _, r := range append(k.Resources, k.Components...) {
			if strings.Contains(r, "examples") || strings.Contains(r, "secret") {
				t.Errorf("%s: resource %s: the Secret template must not be applied", path, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ---- compose ----

type composeFile struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string                    `json:"image"`
	Build       *composeBuild             `json:"build"`
	Command     []string                  `json:"command"`
	Environment map[string]string         `json:"environment"`
	Healthcheck *struct{ Test []string }  `json:"healthcheck"`
	Restart     string                    `json:"restart"`
	Volumes     []string                  `json:"volumes"`
	DependsOn   map[string]map[string]any `json:"depends_on"`
	ReadOnly    bool                      `json:"read_only"`
	User        string                    `json:"user"`
	CapDrop     []string                  `json:"cap_drop"`
	Deploy      *struct {
		Replicas int `json:"replicas"`
	} `json:"deploy"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

// publicImages are the images the compose file may pull (with a pinned tag).
var publicImages = []string{"nats", "mongo", "nginx"}

var mfaRef = regexp.MustCompile(`\bMFA_[A-Z0-9_]+`)

func TestCompose(t *testing.T) {
	const dir = "compose"
	raw := readFile(t, filepath.Join(dir, "compose.yaml"))
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(cf.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	req := required(t)
	runs := map[string]bool{}
	for name, s := range cf.Services {
		what := "compose service " + name
		switch {
		case s.Build != nil:
			ctx := filepath.Join(dir, s.Build.Context)
			if st, err := os.Stat(ctx); err != nil || !st.IsDir() {
				t.Errorf("%s: build context %s does not exist", what, s.Build.Context)
			}
			df := s.Build.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
				t.Errorf("%s: Dockerfile %s does not exist in the build context", what, df)
			}
		case s.Image == "":
			t.Errorf("%s: neither image nor build", what)
		default:
			repo, tag, ok := strings.Cut(s.Image, ":")
			if !ok || tag == "" || tag == "latest" {
				t.Errorf("%s: image %s: pin a tag", what, s.Image)
			}
			if !slices.Contains(publicImages, repo) {
				t.Errorf("%s: image %s is neither built here nor one of the official images %v", what, s.Image, publicImages)
			}
		}
		// Bind mounts name files that exist.
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: bind mount %s does not exist", what, src)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not declared", what, src)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s: depends on unknown service %s", what, dep)
			}
		}
		if s.Restart == "no" {
			// A one-shot job: others wait for it to finish instead of being healthy.
		} else if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s: no healthcheck", what)
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "MFA_") && !known(k) {
				t.Errorf("%s: %s is not a variable of pkg/config", what, k)
			}
		}
		if len(s.Command) == 0 || !strings.HasPrefix(s.Command[0], "/usr/local/bin/") {
			continue
		}
		// An mfaflow service.
		svc := strings.TrimPrefix(s.Command[0], "/usr/local/bin/")
		if !slices.Contains(serviceBinaries, svc) {
			t.Errorf("%s: runs %s, not a service binary of the image", what, s.Command[0])
		}
		runs[svc] = true
		if s.Build == nil {
			t.Errorf("%s: runs the mfaflow image without building it", what)
		}
		if s.Deploy == nil || s.Deploy.Replicas < 2 {
			t.Errorf("%s: want at least 2 replicas", what)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || s.User == "" || strings.HasPrefix(s.User, "0") || strings.HasPrefix(s.User, "root") {
			t.Errorf("%s: want read_only, cap_drop ALL and a non-root user", what)
		}
		if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "/usr/local/bin/healthcheck") {
			t.Errorf("%s: the healthcheck must run /usr/local/bin/healthcheck (GET /healthz)", what)
		}
		for _, v := range req[svc] {
			if s.Environment[v] == "" {
				t.Errorf("%s: %s requires %s (docs/architecture.md)", what, svc, v)
			}
		}
		nodes := strings.Split(s.Environment["MFA_NATS_URL"], ",")
		if len(nodes) < 3 {
			t.Errorf("%s: MFA_NATS_URL %q: list every NATS node", what, s.Environment["MFA_NATS_URL"])
		}
		for _, n := range nodes {
			host := strings.Split(strings.TrimPrefix(n, "nats://"), ":")[0]
			if _, ok := cf.Services[host]; !ok {
				t.Errorf("%s: MFA_NATS_URL names %s, which is not a compose service", what, host)
			}
		}
		if s.Environment["MFA_NATS_REPLICAS"] != "3" {
			t.Errorf("%s: MFA_NATS_REPLICAS must be 3 on the 3-node cluster", what)
		}
		for _, v := range secretVars {
			if val, ok := s.Environment[v]; ok && !strings.HasPrefix(val, "${") {
				t.Errorf("%s: %s has a literal value; take it from .env", what, v)
			}
		}
	}
	for _, svc := range serviceBinaries {
		if !runs[svc] {
			t.Errorf("compose.yaml runs no %s", svc)
		}
	}
	// Every MFA_* name anywhere in compose.yaml and .env.example is a known variable.
	env := readFile(t, filepath.Join(dir, ".env.example"))
	for file, b := range map[string][]byte{"compose.yaml": raw, ".env.example": env} {
		for _, v := range mfaRef.FindAllString(string(b), -1) {
			if !known(v) && v != "MFA_PROXY_PORT" {
				t.Errorf("%s: %s is not a variable of pkg/config", file, v)
			}
		}
	}
	// The example holds no secret values.
	for _, line := range strings.Split(string(env), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && slices.Contains(secretVars, strings.TrimSpace(k)) && strings.Trim(v, `'" `) != "" {
			t.Errorf(".env.example: %s has a value; the example must not carry secrets", k)
		}
	}
	if !strings.Contains(string(readFile(t, filepath.Join(dir, ".gitignore"))), ".env") {
		t.Error("compose/.gitignore must ignore .env")
	}
}

// ---- Dockerfile and Makefile ----

var (
	dockerBuild = regexp.MustCompile(`go build\b[^;\n]*?-o /out/(\S+) (\./[^\s;]+)`)
	makeBuild   = regexp.MustCompile(`(?m)^\t\$\(GO\) build -o \$\(BIN\)/(\S+) (\./\S+)\s*$`)
)

// makeBuildTargets returns binary → package of the Makefile's build target.
func makeBuildTargets(t *testing.T) map[string]string {
	t.Helper()
	mk := string(readFile(t, "../Makefile"))
	_, rest, ok := strings.Cut(mk, "\nbuild:")
	if !ok {
		t.Fatal("Makefile: no build target")
	}
	_, rest, _ = strings.Cut(rest, "\n") // past the target line
	if i := regexp.MustCompile(`(?m)^\S`).FindStringIndex(rest); i != nil {
		rest = rest[:i[0]] // up to the next target
	}
	m := map[string]string{}
	for _, g := range makeBuild.FindAllStringSubmatch(rest, -1) {
		m[g[1]] = g[2]
	}
	if len(m) == 0 {
		t.Fatal("Makefile: the build target builds nothing this test recognises")
	}
	return m
}

func TestDockerfile(t *testing.T) {
	df := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(string(readFile(t, "Dockerfile")), "")
	made := makeBuildTargets(t)
	built := map[string]bool{}
	for _, g := range dockerBuild.FindAllStringSubmatch(df, -1) {
		bin, pkg := g[1], g[2]
		built[bin] = true
		if made[bin] != pkg {
			t.Errorf("Dockerfile builds %s from %s; make build builds %q from %q", bin, pkg, bin, made[bin])
		}
	}
	for _, svc := range append(slices.Clone(serviceBinaries), "healthcheck") {
		if !built[svc] {
			t.Errorf("Dockerfile does not build %s", svc)
		}
	}
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("Dockerfile: binaries must be static (CGO_ENABLED=0)")
	}
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 || !strings.HasPrefix(froms[0][1], "golang:") {
		t.Errorf("Dockerfile: want a golang builder stage and a final stage, got %v", froms)
	} else if final := froms[len(froms)-1][1]; final != "scratch" && !strings.HasPrefix(final, "gcr.io/distroless/static") {
		t.Errorf("Dockerfile: final stage %s: want distroless/static or scratch", final)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
		t.Error("Dockerfile: the final stage must set a non-root USER")
	}
	// The module files of every workspace module are copied before `go mod download`.
	work := string(readFile(t, "../go.work"))
	for _, m := range regexp.MustCompile(`(?m)^\s+\./(\S+)\s*$`).FindAllStringSubmatch(work, -1) {
		if !strings.Contains(df, "COPY "+m[1]+"/go.mod ") {
			t.Errorf("Dockerfile: go.work uses %s, but its go.mod is not copied before go mod download", m[1])
		}
	}
	// Every command the compose file and the manifests run is built.
	for _, svc := range serviceBinaries {
		if made[svc] == "" {
			t.Errorf("make build does not build %s", svc)
		}
	}
}

// ---- nginx (compose's reverse proxy) ----

var (
	nginxLocation = regexp.MustCompile(`(?m)^\s*location\s+(=\s+)?(\S+)\s*\{([^}]*)\}`)
	nginxUpstream = regexp.MustCompile(`(?m)^\s*upstream\s+(\S+)\s*\{[^}]*?server\s+([a-z0-9-]+):`)
)

func TestNginxRoutes(t *testing.T) {
	conf := string(readFile(t, "nginx/nginx.conf"))
	cf := composeFile{}
	if err := yaml.Unmarshal(readFile(t, "compose/compose.yaml"), &cf); err != nil {
		t.Fatal(err)
	}
	// upstream → compose service → the binary it runs.
	upstream := map[string]string{}
	for _, g := range nginxUpstream.FindAllStringSubmatch(conf, -1) {
		s, ok := cf.Services[g[2]]
		if !ok || len(s.Command) == 0 {
			t.Errorf("nginx upstream %s: server %s is not an mfaflow compose service", g[1], g[2])
			continue
		}
		upstream[g[1]] = strings.TrimPrefix(s.Command[0], "/usr/local/bin/")
	}
	got := map[string]string{}
	for _, g := range nginxLocation.FindAllStringSubmatch(conf, -1) {
		path, body := g[2], g[3]
		pp := regexp.MustCompile(`proxy_pass\s+http://([a-z_]+)`).FindStringSubmatch(body)
		if pp == nil {
			continue // answered by nginx itself
		}
		svc, ok := upstream[pp[1]]
		if !ok {
			t.Errorf("nginx location %s: unknown upstream %s", path, pp[1])
		}
		got[strings.TrimSuffix(path, "/")] = svc
		if svc == "status" && strings.Contains(path, "verificationstatus") && !strings.Contains(body, "proxy_buffering off") {
			t.Errorf("nginx location %s: SSE needs proxy_buffering off", path)
		}
	}
	compareRoutes(t, "nginx.conf", got, routes(t))
	for _, want := range []string{"proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection $connection_upgrade"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf: WebSocket upgrades need %q", want)
		}
	}
	// Access logs never carry query strings (?access_token=): a custom format without
	// $request, $request_uri, $args or $query_string, and every access_log uses it.
	formats := regexp.MustCompile(`(?s)log_format\s+(\S+)\s+(.*?);`).FindAllStringSubmatch(conf, -1)
	safe := map[string]bool{}
	for _, f := range formats {
		if regexp.MustCompile(`\$(request|request_uri|args|query_string|arg_\w+|http_referer)\b`).MatchString(f[2]) {
			t.Errorf("nginx.conf: log_format %s logs the query string", f[1])
			continue
		}
		safe[f[1]] = true
	}
	logs := regexp.MustCompile(`(?m)^\s*access_log\s+([^;]+);`).FindAllStringSubmatch(conf, -1)
	if len(logs) == 0 {
		t.Error("nginx.conf: no access_log: the default format logs query strings")
	}
	for _, l := range logs {
		f := strings.Fields(l[1])
		if f[0] != "off" && (len(f) < 2 || !safe[f[1]]) {
			t.Errorf("nginx.conf: access_log %s does not use a format without query strings", l[1])
		}
	}
}
