// Package deploy holds no code: it is the deployment files (systemd/,
// helm/braid/) and the tests that check them without a cluster. The tests
// parse every YAML and JSON file here and render the Helm chart's templates
// with Go's text/template and the few Helm functions the chart uses
// (helm_test.go), so that a template that does not parse or renders
// something other than the intended manifests fails `go test` on a machine
// without helm or Kubernetes. What they cannot check: the manifests
// against the Kubernetes API's schema, and the chart under a real helm.
//
// BRAID_HELM_DUMP=1 go test ./deploy -run TestHelmChartRenders -v prints
// the rendered manifests.
package deploy
