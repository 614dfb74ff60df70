package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func serve(t *testing.T, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return ":" + port
}

func TestCheck(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		if err := check(serve(t, http.StatusOK)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Unavailable", func(t *testing.T) {
		if err := check(serve(t, http.StatusServiceUnavailable)); err == nil {
			t.Fatal("503 passed the check")
		}
	})
	t.Run("BadAddr", func(t *testing.T) {
		if err := check("no-port"); err == nil {
			t.Fatal("an address without a port passed the check")
		}
	})
}
