package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// TestLoadConfigFile: --config-file sets the flags it names, with JSON
// strings, numbers, booleans and arrays; the command line wins over the
// file; an unknown key or an object value is refused, naming the key.
func TestLoadConfigFile(t *testing.T) {
	load := func(t *testing.T, file string, args ...string) (*cli.Context, error) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "braid.json")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		var got *cli.Context
		app := &cli.App{Name: "braid", ExitErrHandler: func(*cli.Context, error) {}, Commands: []*cli.Command{{
			Name: "node",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config-file"}, &cli.StringFlag{Name: "name"}, &cli.IntFlag{Name: "port"},
				&cli.BoolFlag{Name: "http-tls"}, &cli.StringSliceFlag{Name: "join"}, &cli.DurationFlag{Name: "reap-after"},
			},
			Action: func(c *cli.Context) error { got = c; return loadConfigFile(c) },
		}}}
		err := app.Run(append([]string{"braid", "node", "--config-file", path}, args...))
		return got, err
	}
	c, err := load(t, `{"name": "n1", "port": 7946, "http-tls": true, "join": ["a:1", "b:2"], "reap-after": "90m"}`, "--port", "8000")
	if err != nil {
		t.Fatal(err)
	}
	if c.String("name") != "n1" || c.Int("port") != 8000 || !c.Bool("http-tls") ||
		strings.Join(c.StringSlice("join"), ",") != "a:1,b:2" || c.Duration("reap-after") != 90*time.Minute {
		t.Errorf("name %q port %d http-tls %v join %v reap-after %v", c.String("name"), c.Int("port"), c.Bool("http-tls"),
			c.StringSlice("join"), c.Duration("reap-after"))
	}
	if c, err = load(t, `{"http-tls": false}`); err != nil || c.Bool("http-tls") {
		t.Errorf("http-tls false: %v, %v", c.Bool("http-tls"), err)
	}
	for file, want := range map[string]string{
		`{"nmae": "n1"}`:        `unknown key "nmae"`,
		`{"name": {"a": 1}}`:    `key "name" has an unsupported value`,
		`{"port": "not a num"}`: `key "port"`,
		`[1, 2]`:                `not a JSON object`,
	} {
		if _, err := load(t, file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %s", file, err, want)
		}
	}
}
