package kvdoc_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkRelayDrain writes a backlog of documents, each with two pending events (roughly an
// enrollment's initiated + enrolled), then starts a relay and measures how fast it publishes
// every event (it writes nothing back: the next write of a document drops its published events).
// It reports events/s.
func BenchmarkRelayDrain(b *testing.B) {
	const docs, perDoc = 5000, 2
	ctx := context.Background()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		js := natstest.Start(b).JetStream(b)
		kv, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "docs", History: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
			b.Fatal(err)
		}
		s := kvdoc.New[doc](kv)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for d := w; d < docs; d += 16 {
					ms := make([]outbox.Message, perDoc)
					for k := range ms {
						ms[k] = msg(fmt.Sprintf("e%d-%d-%d", i, d, k))
					}
					if _, err := s.Create(ctx, fmt.Sprintf("d.%d", d), doc{Name: "a"}, ms...); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		evStream, err := js.Stream(ctx, events.Stream)
		if err != nil {
			b.Fatal(err)
		}

		b.StartTimer()
		start := time.Now()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
		go func() { defer close(done); _ = r.Run(rctx) }()
		for {
			ev, err := evStream.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if ev.State.Msgs >= docs*perDoc {
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("not drained: %d of %d events", ev.State.Msgs, docs*perDoc)
			}
			time.Sleep(time.Millisecond) // polling a benchmark's progress, not synchronising a test
		}
		elapsed += time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		if ev, _ := evStream.Info(ctx); ev.State.Msgs != docs*perDoc {
			b.Fatalf("stream holds %d events, want %d", ev.State.Msgs, docs*perDoc)
		}
	}
	b.ReportMetric(float64(docs*perDoc*b.N)/elapsed.Seconds(), "events/s")
}
