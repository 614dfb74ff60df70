// Command ferretdb runs a MongoDB-compatible server for tests and the dev stack: FerretDB with its
// SQLite backend, in a temporary directory (or -dir, kept across runs), on a free port of
// 127.0.0.1. It prints the server's URI on standard output (and writes it to -uri-file when
// given), then serves until it gets SIGTERM or SIGINT, or with -stdin until its standard input
// closes, so a parent that dies, however it dies, takes the server with it. With -stdin a SIGINT
// is left to the parent: a Ctrl-C reaches the whole terminal process group, and the parent closes
// the pipe once what uses the server has stopped.
//
// It is a module of its own so that FerretDB's dependencies stay out of the services' modules.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}

func run() error {
	uriFile := flag.String("uri-file", "", "also write the URI to this file (written once the server listens)")
	addr := flag.String("addr", "127.0.0.1:0", "TCP listen address")
	watchStdin := flag.Bool("stdin", false, "stop when standard input closes (and ignore SIGINT: the parent stops it)")
	dataDir := flag.String("dir", "", "keep the data in this directory (created if missing) instead of a temporary one")
	flag.Parse()

	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if *watchStdin {
		signal.Ignore(os.Interrupt)
		sigs = sigs[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	defer stop()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mfaflow-ferretdb-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		dir = tmp
	} else {
		abs, err := filepath.Abs(dir) // SQLite wants a file: URL of an absolute path
		if err != nil {
			return err
		}
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return err
		}
		dir = abs
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
		Logger:    slog.New(slog.DiscardHandler), // it logs every refused command at warn level
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	uri := f.MongoDBURI() // blocks until the listener is up
	if *uriFile != "" {
		tmp := *uriFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(uri+"\n"), 0o600); err != nil {
			stop()
			<-done
			return err
		}
		if err := os.Rename(tmp, *uriFile); err != nil {
			stop()
			<-done
			return err
		}
	}
	fmt.Println(uri)
	return <-done
}
