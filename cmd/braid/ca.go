package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/transport/pki"
)

func caCommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "the cluster certificate authority: node certificates for mutual TLS and the gossip key",
		Description: "Every node needs ca.pem, gossip.key and its own NAME.pem and NAME-key.pem; keep\n" +
			"ca-key.pem on the machine that issues certificates, not on the nodes. A node's name\n" +
			"(its certificate's common name) is its identity in the cluster.",
		Subcommands: []*cli.Command{{
			Name:  "init",
			Usage: "create the cluster CA (ca.pem, ca-key.pem) and the gossip key (gossip.key)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "PKI `DIR` (created if missing; an existing CA there is never overwritten)", Required: true},
			},
			Action: runCAInit,
		}, {
			Name:  "issue",
			Usage: "issue a node certificate signed by the cluster CA (NAME.pem, NAME-key.pem)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "PKI `DIR` holding the CA", Required: true},
				&cli.StringFlag{Name: "name", Usage: "node `NAME` (a-z 0-9 - _ ., at most 64 bytes): its PeerID", Required: true},
				&cli.StringSliceFlag{Name: "host", Usage: "IP address or DNS name of the node (repeatable; recorded in the certificate)"},
				&cli.IntFlag{Name: "days", Value: 365, Usage: "validity in days"},
			},
			Action: runCAIssue,
		}},
	}
}

func runCAInit(c *cli.Context) error {
	dir := c.String("dir")
	if err := pki.InitCA(dir); err != nil {
		return err
	}
	w := c.App.Writer
	for _, f := range []string{pki.CAFile, pki.CAKeyFile, pki.GossipKeyFile} {
		fmt.Fprintln(w, "wrote", filepath.Join(dir, f))
	}
	fmt.Fprintf(w, "keep %s secret; issue node certificates with: braid ca issue --dir %s --name NODE --host ADDRESS\n",
		pki.CAKeyFile, dir)
	return nil
}

func runCAIssue(c *cli.Context) error {
	dir, name, days := c.String("dir"), c.String("name"), c.Int("days")
	if days < 1 {
		return fmt.Errorf("--days %d: must be at least 1", days)
	}
	var hosts []string
	for _, h := range c.StringSlice("host") {
		for _, f := range strings.Split(h, ",") {
			if f = strings.TrimSpace(f); f != "" {
				hosts = append(hosts, f)
			}
		}
	}
	if err := pki.Issue(dir, name, hosts, time.Duration(days)*24*time.Hour); err != nil {
		return err
	}
	creds, err := pki.LoadNode(dir, name)
	if err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintln(w, "wrote", filepath.Join(dir, pki.CertFile(name)))
	fmt.Fprintln(w, "wrote", filepath.Join(dir, pki.KeyFile(name)))
	leaf := creds.Cert.Leaf
	var sans []string
	for _, ip := range leaf.IPAddresses {
		sans = append(sans, ip.String())
	}
	sans = append(sans, leaf.DNSNames...)
	fmt.Fprintf(w, "node %s, hosts [%s], valid until %s\n", name, strings.Join(sans, " "), leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "copy %s, %s, %s and %s to the node\n", pki.CAFile, pki.GossipKeyFile, pki.CertFile(name), pki.KeyFile(name))
	return nil
}
