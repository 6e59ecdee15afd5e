package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
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
		}, {
			Name:      "revoke",
			Usage:     "revoke a node certificate: every node refuses it from now on, closes its connections and drops its node from the cluster",
			ArgsUsage: "NAME",
			Description: "The serial to revoke is read from DIR/NAME.pem (--dir, the CA's directory) or given with\n" +
				"--serial. The revocation is committed in the cluster's replicated state through the node\n" +
				"behind --api; a node that presents the certificate is cut off within seconds, and cannot\n" +
				"come back with it. Issue the node a new certificate to let it back in.",
			Flags: append([]cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "PKI `DIR` holding NAME.pem"},
				&cli.StringFlag{Name: "serial", Usage: "the certificate's serial `NUMBER` in hexadecimal (instead of --dir)"},
			}, apiFlags()...),
			Action: runCARevoke,
		}, {
			Name:  "rotate",
			Usage: "start (or, with --finish, end) a rotation of the cluster CA",
			Description: "Without --finish: a new CA key replaces ca-key.pem (the old one is kept as ca-key.old.pem)\n" +
				"and ca.pem becomes a bundle of the new and the old CA. Then, one node at a time:\n" +
				"  1. copy the new ca.pem to every node and send it SIGHUP (it trusts both CAs);\n" +
				"  2. issue every node a new certificate (braid ca issue signs with the new CA), copy it, SIGHUP;\n" +
				"  3. braid ca rotate --finish (ca.pem: the new CA only), copy ca.pem to every node, SIGHUP.\n" +
				"The cluster and its jobs keep running throughout (docs/SECURITY.md).",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "PKI `DIR` holding the CA", Required: true},
				&cli.BoolFlag{Name: "finish", Usage: "end the rotation: drop the old CA from ca.pem and its key"},
			},
			Action: runCARotate,
		}, {
			Name:      "gossip-key",
			Usage:     "rotate the gossip key in three stages: add, promote, drop",
			ArgsUsage: "add|promote|drop",
			Description: "gossip.key holds one key per line; the first encrypts what a node sends, all decrypt.\n" +
				"  add      append a new key (accepted, not yet used)\n" +
				"  promote  move the new key first (used)\n" +
				"  drop     keep only the first key\n" +
				"After each stage copy gossip.key to every node and send it SIGHUP before the next stage.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "PKI `DIR` holding gossip.key", Required: true},
			},
			Action: runGossipKey,
		}},
	}
}

func runCARevoke(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("braid ca revoke NAME: give exactly one node name")
	}
	name := c.Args().First()
	if !pki.ValidName(name) {
		return fmt.Errorf("%q is not a node name", name)
	}
	serial := strings.ToLower(strings.TrimPrefix(strings.ReplaceAll(c.String("serial"), ":", ""), "0x"))
	serial = strings.TrimLeft(serial, "0")
	switch dir := c.String("dir"); {
	case dir != "" && serial != "":
		return fmt.Errorf("--dir and --serial: give one")
	case dir != "":
		cert, err := pki.ReadCertificate(filepath.Join(dir, pki.CertFile(name)))
		if err != nil {
			return err
		}
		if cert.Subject.CommonName != name {
			return fmt.Errorf("%s is the certificate of %q, not %q", filepath.Join(dir, pki.CertFile(name)), cert.Subject.CommonName, name)
		}
		serial = pki.Serial(cert)
	case serial == "":
		return fmt.Errorf("which certificate? give --dir (the CA's directory, holding %s) or --serial", pki.CertFile(name))
	}
	if !pki.ValidSerial(serial) {
		return fmt.Errorf("--serial %q: want the serial number in hexadecimal (at most 40 digits)", c.String("serial"))
	}
	cl, err := nodeClient(c)
	if err != nil {
		return err
	}
	rev, err := cl.RevokeCert(c.Context, node.RevokeRequest{Serial: serial, Name: name})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "revoked the certificate of %s, serial %s, at %s: every node refuses it now\n",
		rev.Name, rev.Serial, time.Unix(rev.At, 0).UTC().Format(time.RFC3339))
	return nil
}

func runCARotate(c *cli.Context) error {
	dir, w := c.String("dir"), c.App.Writer
	if c.Bool("finish") {
		if err := pki.DropOldCAs(dir); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s (the new CA only); copy it to every node and send each SIGHUP\n", filepath.Join(dir, pki.CAFile))
		return nil
	}
	if err := pki.RotateCA(dir); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s (new CA key; the old one is in %s) and %s (new CA + old)\n",
		filepath.Join(dir, pki.CAKeyFile), pki.OldCAKeyFile, filepath.Join(dir, pki.CAFile))
	fmt.Fprintln(w, "next: copy ca.pem to every node and SIGHUP it; then re-issue every node's certificate (braid ca issue), copy, SIGHUP;")
	fmt.Fprintf(w, "then: braid ca rotate --dir %s --finish\n", dir)
	return nil
}

func runGossipKey(c *cli.Context) error {
	dir := c.String("dir")
	stages := map[string]func(string) error{"add": pki.AddGossipKey, "promote": pki.PromoteGossipKey, "drop": pki.DropGossipKeys}
	f, ok := stages[c.Args().First()]
	if c.NArg() != 1 || !ok {
		return fmt.Errorf("braid ca gossip-key: give one stage: add, promote or drop")
	}
	if err := f(dir); err != nil {
		return err
	}
	keys, err := pki.LoadGossipKeys(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s (%d key(s)); copy it to every node and send each SIGHUP before the next stage\n",
		filepath.Join(dir, pki.GossipKeyFile), len(keys))
	return nil
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
