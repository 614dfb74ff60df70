// Command events prints mfaflow's CloudEvents as they arrive on the MFA_EVENTS stream, one JSON
// document per line: a stand-in for a downstream consumer while you try the dev stack.
//
//	go run ./devstack/cmd/events                # everything from the start of the stream
//	go run ./devstack/cmd/events -new           # only what happens from now on
//	go run ./devstack/cmd/events -nats nats://127.0.0.1:4222 -subject 'mfa.events.device.>'
//
// Without -nats it connects where the dev stack's NATS is: MFA_NATS_URL when set, else the
// embedded server at MFA_EMBEDDED_NATS_ADDR (default 127.0.0.1:4222), as `make run` reads them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", natsURL(os.Getenv), "NATS URL (default: MFA_NATS_URL, else nats:// + MFA_EMBEDDED_NATS_ADDR)")
	subject := flag.String("subject", events.StreamSubjects, "subject filter")
	onlyNew := flag.Bool("new", false, "only events published from now on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *subject, *onlyNew, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

// natsURL is where the dev stack's NATS is, from its environment: MFA_NATS_URL when set (the
// stack then embeds no server), else the embedded server's MFA_EMBEDDED_NATS_ADDR. An address
// that listens on every interface (":4222", "0.0.0.0:4222") is dialled on loopback.
func natsURL(getenv func(string) string) string {
	if u := getenv("MFA_NATS_URL"); u != "" {
		return u
	}
	addr := getenv("MFA_EMBEDDED_NATS_ADDR")
	if addr == "" {
		addr = defaultOf("MFA_EMBEDDED_NATS_ADDR")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "nats://" + addr // let the connection say what is wrong with it
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, port)
}

// defaultOf is the default config gives the variable name.
func defaultOf(name string) string {
	for _, v := range config.Variables {
		if v.Name == name {
			return v.Default
		}
	}
	return ""
}

// run prints the events under subject to out until ctx ends.
func run(ctx context.Context, url, subject string, onlyNew bool, out io.Writer) error {
	nc, err := nats.Connect(url, nats.Name("mfaflow-events-tail"))
	if err != nil {
		return fmt.Errorf("connect %s: %w (is the dev stack running there? point -nats, MFA_NATS_URL or MFA_EMBEDDED_NATS_ADDR at its NATS)", natsx.Redact(url), err)
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
		return fmt.Errorf("consume %s on %s (is the dev stack running?): %w", events.Stream, natsx.Redact(url), err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { fmt.Fprintln(out, string(m.Data())) })
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}
