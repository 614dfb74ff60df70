// Command ferretdb runs a MongoDB-compatible server for tests: FerretDB with its SQLite backend,
// in a temporary directory, on a free port of 127.0.0.1. It prints the server's URI on standard
// output (and writes it to -uri-file when given), then serves until it is interrupted or its
// standard input closes, so a test process that dies takes the server with it.
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
	watchStdin := flag.Bool("stdin", false, "stop when standard input closes")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	dir, err := os.MkdirTemp("", "mfaflow-ferretdb-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

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
