// Package apidoc holds mfaflow's HTTP contract as an OpenAPI 3.1 document and serves it.
//
// openapi.json is written by hand from the handlers, which are the source of truth; the
// end-to-end test in tests/openapi_test.go drives the running dev stack and validates every
// response against it, so the document cannot drift from the code unnoticed. The schemas of
// response bodies forbid undocumented fields for the same reason.
package apidoc

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// Path is where the document is served.
const Path = "/openapi.json"

// Document is the OpenAPI 3.1.0 document (JSON). Callers must not modify it.
//
//go:embed openapi.json
var Document []byte

// etag is a strong validator of Document: a hash of its bytes, so it changes exactly when the
// document does, across replicas and restarts.
var etag = func() string {
	sum := sha256.Sum256(Document)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}()

// cacheControl is no-store like every response of mfaflow, so a proxy never serves a document
// from an older release; the ETag still lets a client skip the download (304).
const cacheControl = "no-store"

// Handler serves Document as application/json with a strong ETag, answering 304 to a matching
// If-None-Match. Mount it on a GET route (the router answers other methods; net/http drops the
// body of a HEAD response).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", cacheControl)
		h.Set("ETag", etag)
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(Document)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(Document)
	})
}

// etagMatches applies If-None-Match's weak comparison (RFC 9110 §13.1.2) to a list of tags.
func etagMatches(header string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
