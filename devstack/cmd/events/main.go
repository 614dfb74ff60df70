// Command events prints mfaflow's CloudEvents as they arrive on the MFA_EVENTS stream, one JSON
// document per line: a stand-in for a downstream consumer while you try the dev stack.
//
//	go run ./devstack/cmd/events                # everything from the start of the stream
//	go run ./devstack/cmd/events -new           # only what happens from now on
//	go run ./devstack/cmd/events -nats nats://127.0.0.1:4222 -subject 'mfa.events.device.>'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mfaflow/mfaflow/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", envOr("MFA_NATS_URL", "nats://127.0.0.1:4222"), "NATS URL")
	subject := flag.String("subject", events.StreamSubjects, "subject filter")
	onlyNew := flag.Bool("new", false, "only events published from now on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *subject, *onlyNew); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, subject string, onlyNew bool) error {
	nc, err := nats.Connect(url, nats.Name("mfaflow-events-tail"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if onlyNew {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	// An ordered consumer is ephemeral and leaves nothing behind on the server.
	cons, err := js.OrderedConsumer(ctx, events.Stream, cfg)
	if err != nil {
		return fmt.Errorf("consume %s (is the dev stack running?): %w", events.Stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { fmt.Println(string(m.Data())) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
