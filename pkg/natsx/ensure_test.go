package natsx_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/nats-io/nats.go/jetstream"
)

func newLog() (*slog.Logger, *testkit.LogBuffer) {
	b := &testkit.LogBuffer{}
	return slog.New(slog.NewJSONHandler(b, nil)), b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEnsureEventStream(t *testing.T) {
	t.Run("CreatesMissing", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		log, buf := newLog()
		st, err := natsx.EnsureEventStream(testCtx(t), js, natsx.WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		if cfg.Replicas != 1 || cfg.Duplicates != 2*time.Minute || cfg.MaxAge != 7*24*time.Hour {
			t.Fatalf("created %+v", cfg)
		}
		// Ensuring it again is quiet: nothing differs.
		if _, err := natsx.EnsureEventStream(testCtx(t), js, natsx.WithLogger(log)); err != nil {
			t.Fatal(err)
		}
		if s := buf.String(); s != "" {
			t.Fatalf("logged %s, want nothing", s)
		}
	})
	t.Run("LeavesExistingAndWarns", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		ctx := testCtx(t)
		own := natsx.EventStreamConfig()
		own.MaxAge = 30 * 24 * time.Hour
		own.Duplicates = 10 * time.Minute
		if _, err := js.CreateStream(ctx, own); err != nil {
			t.Fatal(err)
		}
		log, buf := newLog()
		st, err := natsx.EnsureEventStream(ctx, js, natsx.WithLogger(log), natsx.WithReplicas(1))
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxAge != own.MaxAge || info.Config.Duplicates != own.Duplicates {
			t.Fatalf("stream reset to %+v, want the operator's max age and duplicates window", info.Config)
		}
		out := buf.String()
		if !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, `"stream":"`+events.Stream+`"`) ||
			!strings.Contains(out, `"max_age":{"want":"168h0m0s","have":"720h0m0s"}`) ||
			!strings.Contains(out, `"duplicates":{"want":"2m0s","have":"10m0s"}`) {
			t.Fatalf("log = %s, want a warning naming max_age and duplicates", out)
		}
	})
}

func TestEnsureDeliveryStream(t *testing.T) {
	js := natstest.Start(t).JetStream(t)
	log, buf := newLog()
	st, err := natsx.EnsureDeliveryStream(testCtx(t), js, natsx.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Name != delivery.Stream || cfg.Retention != jetstream.WorkQueuePolicy || cfg.Replicas != 1 || cfg.Duplicates != delivery.StreamConfig().Duplicates {
		t.Fatalf("created %+v", cfg)
	}
	if _, err := natsx.EnsureDeliveryStream(testCtx(t), js, natsx.WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); s != "" {
		t.Fatalf("logged %s, want nothing", s)
	}
}

func TestEnsureKV(t *testing.T) {
	cfg := jetstream.KeyValueConfig{Bucket: "ensure_test", History: 1, TTL: time.Hour, Storage: jetstream.FileStorage}
	t.Run("CreatesMissing", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		log, buf := newLog()
		kv, err := natsx.EnsureKV(testCtx(t), js, cfg, natsx.WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(testCtx(t))
		if err != nil || st.TTL() != time.Hour || st.History() != 1 {
			t.Fatalf("status %+v, %v", st, err)
		}
		if _, err := natsx.EnsureKV(testCtx(t), js, cfg, natsx.WithLogger(log)); err != nil {
			t.Fatal(err)
		}
		if s := buf.String(); s != "" {
			t.Fatalf("logged %s, want nothing", s)
		}
	})
	t.Run("LeavesExistingAndWarns", func(t *testing.T) {
		js := natstest.Start(t).JetStream(t)
		ctx := testCtx(t)
		own := cfg
		own.History = 5
		own.TTL = 0
		if _, err := js.CreateKeyValue(ctx, own); err != nil {
			t.Fatal(err)
		}
		log, buf := newLog()
		kv, err := natsx.EnsureKV(ctx, js, cfg, natsx.WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil || st.History() != 5 || st.TTL() != 0 {
			t.Fatalf("bucket reset: %+v, %v", st, err)
		}
		out := buf.String()
		if !strings.Contains(out, `"level":"WARN"`) || !strings.Contains(out, `"history":{"want":1,"have":5}`) ||
			!strings.Contains(out, `"ttl":{"want":"1h0m0s","have":"0s"}`) {
			t.Fatalf("log = %s, want a warning naming history and ttl", out)
		}
	})
}

// TestEnsureReplicated: on a 3-node cluster a missing stream and bucket are created with the
// configured replicas; an R1 stream made by an operator stays R1, with a warning.
func TestEnsureReplicated(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc, err := natsx.Connect(c.URL, "ensure-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	log, buf := newLog()
	st, err := natsx.EnsureEventStream(ctx, js, natsx.WithReplicas(3), natsx.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream replicas = %d, want 3", r)
	}
	kv, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "ensure_r3", History: 1}, natsx.WithReplicas(3), natsx.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	kst, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := kst.(*jetstream.KeyValueBucketStatus).StreamInfo().Config; c.Replicas != 3 || c.AllowDirect {
		t.Fatalf("bucket replicas = %d, allow direct %v; want 3 replicas that read from the leader", c.Replicas, c.AllowDirect)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("stream cluster info %+v, want a leader and 2 replicas", info.Cluster)
		}
		return nil
	})
	if s := buf.String(); s != "" {
		t.Fatalf("logged %s, want nothing", s)
	}

	// An operator's R1 bucket is not scaled up behind their back.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ensure_r1", History: 1}); err != nil {
		t.Fatal(err)
	}
	kv, err = natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "ensure_r1", History: 1}, natsx.WithReplicas(3), natsx.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	kst, _ = kv.Status(ctx)
	if r := kst.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 1 {
		t.Fatalf("operator's bucket replicas = %d, want 1 left alone", r)
	}
	if out := buf.String(); !strings.Contains(out, `"replicas":{"want":3,"have":1}`) {
		t.Fatalf("log = %s, want a replicas warning", out)
	}
}
