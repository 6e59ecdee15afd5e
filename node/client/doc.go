// Package client is a typed client of a braid node's HTTP API: one method
// per operation (Status, SubmitJob, Job, DownloadJobFile, CreateDataset,
// PutBlob, BenchAllReduce, ...), each taking and returning the types that
// packages node and coordinator define for that endpoint, so that a change
// to an endpoint's types is a compile error here, not a silent mismatch.
//
// What it does, for every call:
//   - sends the request to the node at Config.URL (http:// or https://;
//     a URL without a scheme is refused by New with what to write
//     instead), with the bearer token when there is one, and every path
//     segment the caller gives (a job id, a file name, a hash) escaped;
//   - over https, verifies the node's certificate against the cluster CA
//     only (Config.CAFile), for the URL's host or the node named in
//     Config.Node, and tells a URL of the wrong scheme (https to a plain
//     API, http to an HTTPS one) from an unreachable node (ErrScheme);
//   - bounds the call: each short call by its Config.Timeouts entry (or
//     the caller's context, whichever ends first), each JSON answer to
//     16 MiB, each error message read to 4 KiB;
//   - returns an answer other than 200 OK as *APIError (method, URL,
//     status, the node's message), and a request that got no answer as an
//     error wrapping ErrUnreachable and the network error, naming the URL.
//
// What it does not do: retry (a call fails once, as it failed, and the
// caller decides whether to try again: no failure is hidden behind a
// later success), follow the leader (each call goes to the node at URL,
// which forwards what it must), find a token or CA by itself (the CLI
// reads its flags and the records a node leaves, and passes them in
// Config), add advice meant for a particular program's users (the CLI
// wraps APIError and ErrUnreachable with its flags' names), cache answers,
// or validate requests (the node does, and its message comes back in
// APIError).
//
// A Client holds no state but its configuration and its http.Client: it
// is safe for concurrent use, and needs no closing.
package client
