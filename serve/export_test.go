package serve

import "net"

// StartOn is startOn for tests: serve on a listener of the test's making.
func StartOn(cfg Config, e *Engine, ln net.Listener) (*Server, error) { return startOn(cfg, e, ln) }
