package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/braidml/braid/node/blobstore"
)

// Uploads: how bytes from a client reach this node (SECURITY.md). A client
// never names a path on the node's machine: it reads its files itself and
// sends each one as an object named by its SHA-256,
//
//	HEAD /v1/blobs/{sha256}               200 if this node holds it, else 404
//	PUT  /v1/blobs/{sha256}[?private=1]   the bytes (application/octet-stream)
//
// and then names the objects by hash (POST /v1/datasets, POST /v1/jobs),
// which read them from this node's store. A PUT's body is streamed into a
// temporary file of the store, hashed as it is written, capped at
// Config.MaxUploadBytes (413 beyond, before a byte is read when the
// Content-Length says so), and installed only when it hashes to the name
// (422 otherwise); on any failure nothing is left behind. An object already
// held is answered at once without reading the body, so a client that
// retries resends only what is missing, and the object counts as young
// again for the collector (gc.go). Objects that no dataset or job names yet
// are capped together at Config.MaxPendingUploadBytes: an upload that would
// pass the cap is refused before its body is read (507 Insufficient
// Storage), naming the cap. private=1 marks the object private
// before a byte of it is stored (a local dataset's shards: see
// blobstore.Store.MarkPrivate).

// DefaultMaxUploadBytes is Config.MaxUploadBytes when it is zero.
const DefaultMaxUploadBytes = 64 << 30

// uploadReadTimeout bounds how long an upload may go without a byte
// arriving (in place of the API's ReadTimeout for the whole request, which
// a large object on a slow link would exceed).
const uploadReadTimeout = 30 * time.Second

// BlobPut is the answer to PUT /v1/blobs/{sha256}.
type BlobPut struct {
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	// Present is true when the node already held the object and read
	// nothing.
	Present bool `json:"present,omitempty"`
}

// streamedBody reports whether r is an upload, whose body its handler
// streams to disk instead of the API reading it whole first (api.go), and
// whose Content-Type is application/octet-stream instead of JSON. A web
// page cannot send a PUT to another origin without the browser's preflight,
// which this API never grants, so the JSON rule is not needed for it.
func streamedBody(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/blobs/")
}

// HasObject reports whether this node's store holds object h.
func (n *Node) HasObject(h string) bool { return n.store.Has(h) }

// ReceiveObject stores what r yields as object h (see the uploads above:
// hashed, capped at Config.MaxUploadBytes, installed only when it matches
// h). private marks h private first. It returns the object's size.
func (n *Node) ReceiveObject(h string, private bool, r io.Reader) (int64, error) {
	if !blobstore.ValidHash(h) {
		return 0, fmt.Errorf("node: upload: %w", blobstore.ErrBadHash)
	}
	if private {
		if err := n.store.MarkPrivate(h); err != nil {
			return 0, err
		}
	}
	return n.store.Receive(r, h, n.maxUpload())
}

func (n *Node) maxUpload() int64 { return n.cfg.maxUpload() }

func (c Config) maxUpload() int64 {
	if c.MaxUploadBytes > 0 {
		return c.MaxUploadBytes
	}
	return DefaultMaxUploadBytes
}

// blobRoutes serves the upload endpoints.
func (n *Node) blobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("HEAD /v1/blobs/{hash}", func(w http.ResponseWriter, r *http.Request) {
		h := r.PathValue("hash")
		if !blobstore.ValidHash(h) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		info, err := n.store.Stat(h)
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("PUT /v1/blobs/{hash}", func(w http.ResponseWriter, r *http.Request) {
		h := r.PathValue("hash")
		if !blobstore.ValidHash(h) {
			http.Error(w, fmt.Sprintf("braid: upload: the object's name %.80q is not a SHA-256 (64 lowercase hex digits)", h), http.StatusBadRequest)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/octet-stream" {
			http.Error(w, "braid: upload: want Content-Type: application/octet-stream", http.StatusUnsupportedMediaType)
			return
		}
		private := r.URL.Query().Get("private") == "1"
		if info, err := n.store.Stat(h); err == nil {
			// Young again: the client is about to name it (gc.go).
			n.touch(h)
			if private {
				if err := n.store.MarkPrivate(h); err != nil {
					http.Error(w, "braid: upload: "+err.Error(), http.StatusInternalServerError)
					return
				}
			}
			writeJSON(w, http.StatusOK, BlobPut{Hash: h, Size: info.Size, Present: true})
			return
		}
		max := n.maxUpload()
		if r.ContentLength > max {
			http.Error(w, fmt.Sprintf("braid: upload %.12s: %d bytes, more than the %d this node accepts for one object (node --max-upload)", h, r.ContentLength, max), http.StatusRequestEntityTooLarge)
			return
		}
		reserve := r.ContentLength
		if reserve < 0 {
			reserve = max // chunked: at most the limit
		}
		release, err := n.reserveUpload(h, reserve)
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrUploadBacklog) {
				code = http.StatusInsufficientStorage
			}
			http.Error(w, fmt.Sprintf("braid: upload %.12s: %v", h, err), code)
			return
		}
		defer release()
		body := &idleDeadlineReader{r: r.Body, rc: http.NewResponseController(w), timeout: uploadReadTimeout}
		size, err := n.ReceiveObject(h, private, body)
		if err != nil {
			code := http.StatusUnprocessableEntity
			switch {
			case errors.Is(err, blobstore.ErrTooLarge):
				code = http.StatusRequestEntityTooLarge
			case errors.Is(err, blobstore.ErrHashMismatch):
			case errors.Is(err, context.Canceled), errors.Is(err, io.ErrUnexpectedEOF), body.failed:
				code = http.StatusBadRequest
			default:
				code = http.StatusInternalServerError
			}
			http.Error(w, "braid: upload: "+err.Error(), code)
			return
		}
		n.log.Info("object uploaded", "object", h[:12], "bytes", size, "private", private)
		writeJSON(w, http.StatusOK, BlobPut{Hash: h, Size: size})
	})
}

// idleDeadlineReader reads a request body, moving the connection's read
// deadline timeout ahead before each read: an upload may take as long as
// it needs while bytes keep arriving, and is given up after timeout
// without any.
type idleDeadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	failed  bool // a read of the body failed (the client's fault, or the link's)
}

func (d *idleDeadlineReader) Read(p []byte) (int, error) {
	d.rc.SetReadDeadline(time.Now().Add(d.timeout))
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.failed = true
	}
	return n, err
}
