package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"

	"go.yaml.in/yaml/v3"
)

const chartDir = "helm/braid"

// Every YAML and JSON file under deploy/ but the chart's templates (which
// are YAML only once rendered) parses, and has at least one document.
func TestDeployFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(filepath.ToSlash(path), "/templates/") {
			return nil
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		docs, err := parseYAML(b)
		if err != nil {
			t.Errorf("%s: %v", path, err)
		} else if len(docs) == 0 {
			t.Errorf("%s: no YAML document", path)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("only %d YAML/JSON files found under deploy/: the walk is looking in the wrong place", n)
	}
}

// The chart, rendered with its own values, is a headless Service, a
// StatefulSet and a PodDisruptionBudget that fit together: stable names
// for gossip and Raft, a volume per node, Secrets mounted read-only,
// probes, a non-root read-only container.
func TestHelmChartRenders(t *testing.T) {
	objs := renderChart(t, nil)
	svc, sts := objs["Service/braid-headless"], objs["StatefulSet/braid"]
	if svc == nil || sts == nil || objs["PodDisruptionBudget/braid"] == nil {
		t.Fatalf("rendered objects: %v; want Service/braid-headless, StatefulSet/braid, PodDisruptionBudget/braid", keys(objs))
	}
	if get(svc, "spec.clusterIP") != "None" || get(svc, "spec.publishNotReadyAddresses") != true {
		t.Errorf("the Service is not headless with not-ready addresses published: %v", get(svc, "spec"))
	}
	if get(sts, "spec.serviceName") != "braid-headless" || get(sts, "spec.podManagementPolicy") != "Parallel" || get(sts, "spec.replicas") != 3 {
		t.Errorf("StatefulSet spec: serviceName %v, podManagementPolicy %v, replicas %v", get(sts, "spec.serviceName"),
			get(sts, "spec.podManagementPolicy"), get(sts, "spec.replicas"))
	}
	c := get(sts, "spec.template.spec.containers.0").(map[string]any)
	env := envOf(t, c)
	wantJoin := "braid-0.braid-headless.ml.svc.cluster.local:7946,braid-1.braid-headless.ml.svc.cluster.local:7946,braid-2.braid-headless.ml.svc.cluster.local:7946"
	for k, want := range map[string]string{"BRAID_JOIN": wantJoin, "BRAID_BOOTSTRAP_EXPECT": "3", "BRAID_DEVICE": "cpu",
		"BRAID_TLS_DIR": "/tls", "BRAID_DATA_DIR": "/var/lib/braid/node", "BRAID_TOKEN_FILE": "/token/token", "BRAID_HTTP": "0.0.0.0:7950",
		"BRAID_NAME": "fieldRef:metadata.name", "BRAID_ADVERTISE": "fieldRef:status.podIP"} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	if get(c, "readinessProbe.httpGet.path") != "/v1/ready" || get(c, "livenessProbe.httpGet.path") != "/v1/health" {
		t.Errorf("probes: readiness %v, liveness %v", get(c, "readinessProbe"), get(c, "livenessProbe"))
	}
	if get(c, "securityContext.readOnlyRootFilesystem") != true || get(c, "securityContext.allowPrivilegeEscalation") != false ||
		get(sts, "spec.template.spec.securityContext.runAsNonRoot") != true {
		t.Errorf("security contexts: pod %v, container %v", get(sts, "spec.template.spec.securityContext"), get(c, "securityContext"))
	}
	if _, ok := get(c, "resources.limits").(map[string]any)["nvidia.com/gpu"]; ok {
		t.Errorf("a GPU is requested with gpu.enabled false: %v", get(c, "resources"))
	}
	// Every mount names a volume of the pod or a claim template.
	vols := map[string]bool{get(sts, "spec.volumeClaimTemplates.0.metadata.name").(string): true}
	for _, v := range get(sts, "spec.template.spec.volumes").([]any) {
		vols[v.(map[string]any)["name"].(string)] = true
	}
	for _, m := range get(c, "volumeMounts").([]any) {
		if name := m.(map[string]any)["name"].(string); !vols[name] {
			t.Errorf("volume mount %q names no volume (have %v)", name, vols)
		}
	}
	if get(sts, "spec.volumeClaimTemplates.0.spec.resources.requests.storage") != "20Gi" {
		t.Errorf("claim template: %v", get(sts, "spec.volumeClaimTemplates.0"))
	}
	// The container's ports are the Service's.
	for _, p := range get(svc, "spec.ports").([]any) {
		name := p.(map[string]any)["name"]
		found := false
		for _, cp := range get(c, "ports").([]any) {
			if cp.(map[string]any)["name"] == name && cp.(map[string]any)["containerPort"] == p.(map[string]any)["port"] {
				found = true
			}
		}
		if !found {
			t.Errorf("Service port %v has no container port of the same name and number", p)
		}
	}
}

// GPU nodes request nvidia.com/gpu and run with --device cuda; values
// override the defaults as `helm --set` would.
func TestHelmChartGPU(t *testing.T) {
	objs := renderChart(t, map[string]any{"gpu": map[string]any{"enabled": true, "count": 2}, "replicas": 5,
		"podDisruptionBudget": map[string]any{"enabled": false}})
	sts := objs["StatefulSet/braid"]
	if sts == nil || objs["PodDisruptionBudget/braid"] != nil {
		t.Fatalf("rendered objects: %v", keys(objs))
	}
	c := get(sts, "spec.template.spec.containers.0").(map[string]any)
	if got := get(c, "resources.limits.nvidia\\.com/gpu"); got != 2 {
		t.Errorf("resources: %v, want limits nvidia.com/gpu 2", get(c, "resources"))
	}
	if env := envOf(t, c); env["BRAID_DEVICE"] != "cuda" || strings.Count(env["BRAID_JOIN"], ",") != 2 {
		t.Errorf("env: device %q, join %q (the first 3 pods)", env["BRAID_DEVICE"], env["BRAID_JOIN"])
	}
}

// Without the Secrets' names the chart refuses to render, naming the value.
func TestHelmChartRequiresSecrets(t *testing.T) {
	_, err := renderChartErr(t, map[string]any{"tlsSecret": ""})
	if err == nil || !strings.Contains(err.Error(), "tlsSecret") {
		t.Fatalf("rendering without tlsSecret: %v", err)
	}
}

// renderChart renders every template of the chart for a release "braid"
// in namespace "ml", values overridden by set, and returns the objects by
// KIND/NAME.
func renderChart(t *testing.T, set map[string]any) map[string]map[string]any {
	t.Helper()
	objs, err := renderChartErr(t, set)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func renderChartErr(t *testing.T, set map[string]any) (map[string]map[string]any, error) {
	t.Helper()
	var chart, values map[string]any
	for path, v := range map[string]*map[string]any{"Chart.yaml": &chart, "values.yaml": &values} {
		b, err := os.ReadFile(filepath.Join(chartDir, path))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	mergeValues(values, set)
	top := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": "braid", "Namespace": "ml", "Service": "Helm"},
		"Chart":   map[string]any{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
	}
	tmpl := template.New("chart").Option("missingkey=error")
	tmpl.Funcs(helmFuncs(tmpl))
	files, _ := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	var manifests []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmpl.New(filepath.Base(f)).Parse(string(b)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if strings.HasSuffix(f, ".yaml") {
			manifests = append(manifests, filepath.Base(f))
		}
	}
	if len(manifests) < 3 {
		t.Fatalf("only %d manifest templates in %s", len(manifests), chartDir)
	}
	objs := map[string]map[string]any{}
	for _, name := range manifests {
		var out bytes.Buffer
		if err := tmpl.ExecuteTemplate(&out, name, top); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if os.Getenv("BRAID_HELM_DUMP") != "" {
			t.Log(out.String())
		}
		docs, err := parseYAML(out.Bytes())
		if err != nil {
			t.Fatalf("%s renders YAML that does not parse: %v\n%s", name, err, out.String())
		}
		for _, d := range docs {
			if d == nil {
				continue // a template switched off by its values
			}
			m, ok := d.(map[string]any)
			if !ok || m["apiVersion"] == nil || m["kind"] == nil || get(m, "metadata.name") == nil {
				t.Fatalf("%s renders a document without apiVersion, kind and metadata.name:\n%s", name, out.String())
			}
			objs[fmt.Sprintf("%s/%s", m["kind"], get(m, "metadata.name"))] = m
		}
	}
	if err := tmpl.ExecuteTemplate(&bytes.Buffer{}, "NOTES.txt", top); err != nil {
		return nil, fmt.Errorf("NOTES.txt: %w", err)
	}
	return objs, nil
}

// helmFuncs are the functions of Helm (its own and sprig's) that the
// chart uses, with Helm's meaning; a template that calls any other fails
// to parse here, which keeps the chart within what this test checks.
func helmFuncs(tmpl *template.Template) template.FuncMap {
	indent := func(n int, s string) string {
		pad := strings.Repeat(" ", n)
		return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
	}
	return template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := tmpl.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"toYaml": func(v any) (string, error) {
			b, err := yaml.Marshal(v)
			return strings.TrimSuffix(string(b), "\n"), err
		},
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"quote":   func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
		"trunc": func(n int, s string) string {
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"int": func(v any) (int, error) {
			switch v := v.(type) {
			case int:
				return v, nil
			case float64:
				return int(v), nil
			}
			return 0, fmt.Errorf("int: %v (%T) is not a number", v, v)
		},
		"until": func(n int) []int {
			s := make([]int, n)
			for i := range s {
				s[i] = i
			}
			return s
		},
		"required": func(msg string, v any) (any, error) {
			if v == nil || v == "" {
				return nil, errors.New(msg)
			}
			return v, nil
		},
	}
}

// parseYAML decodes every document of b.
func parseYAML(b []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []any
	for {
		var d any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		docs = append(docs, d)
	}
}

// mergeValues overrides dst with src, key by key in nested maps, as
// `helm --set` does; a nil in src removes the key.
func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		sub, ok := v.(map[string]any)
		if d, isMap := dst[k].(map[string]any); ok && isMap {
			mergeValues(d, sub)
			continue
		}
		if v == nil {
			delete(dst, k)
			continue
		}
		dst[k] = v
	}
}

// get follows a dotted path of map keys and list indexes ("\\." is a dot
// inside a key); nil when any step is missing.
func get(v any, path string) any {
	for _, step := range splitPath(path) {
		switch x := v.(type) {
		case map[string]any:
			v = x[step]
		case []any:
			var i int
			if _, err := fmt.Sscan(step, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func splitPath(path string) []string {
	parts := strings.Split(strings.ReplaceAll(path, `\.`, "\x00"), ".")
	for i := range parts {
		parts[i] = strings.ReplaceAll(parts[i], "\x00", ".")
	}
	return parts
}

// envOf is a container's environment: values, or "fieldRef:PATH".
func envOf(t *testing.T, c map[string]any) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range get(c, "env").([]any) {
		m := e.(map[string]any)
		if v, ok := m["value"]; ok {
			env[m["name"].(string)] = fmt.Sprint(v)
		} else if f := get(m, "valueFrom.fieldRef.fieldPath"); f != nil {
			env[m["name"].(string)] = "fieldRef:" + f.(string)
		}
	}
	return env
}

func keys(m map[string]map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}
