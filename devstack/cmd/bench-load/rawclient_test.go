package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRawClient: the raw client reads Content-Length and chunked bodies and bodiless answers
// on one keep-alive connection, and dials again after the server closed it.
func TestRawClient(t *testing.T) {
	big := strings.Repeat("x", 5000) // beyond net/http's buffer: sent chunked
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			_, _ = w.Write([]byte(`{"ok":true}`))
		case "/big":
			_, _ = w.Write([]byte(big))
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/echo":
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(r.Header.Get("Authorization") + " " + r.Header.Get("X-A")))
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte("bye"))
		}
	}))
	defer srv.Close()
	c := newRawClient(srv.URL, 1)
	defer c.close()
	for _, tc := range []struct {
		req    []byte
		status int
		body   string
	}{
		{c.request(http.MethodGet, "/small", "", nil), 200, `{"ok":true}`},
		{c.request(http.MethodGet, "/big", "", nil), 200, big},
		{c.request(http.MethodGet, "/304", "", nil), 304, ""},
		{appendJSONBody(nil, c.head(http.MethodPost, "/echo", "tok", "X-A", "b"), []byte(`{}`)), 201, "Bearer tok b"},
		{c.request(http.MethodGet, "/close", "", nil), 200, "bye"},
		{c.request(http.MethodGet, "/small", "", nil), 200, `{"ok":true}`},
	} {
		st, body, err := c.conn(0).do(tc.req)
		if err != nil || st != tc.status || string(body) != tc.body {
			t.Fatalf("%q: %d %.40q %v, want %d %.40q", tc.req, st, body, err, tc.status, tc.body)
		}
	}
}
