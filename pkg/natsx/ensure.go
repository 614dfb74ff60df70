package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EnsureOption tunes EnsureEventStream and EnsureKV.
type EnsureOption func(*ensureOptions)

type ensureOptions struct {
	replicas int
	log      *slog.Logger
}

// WithReplicas is the replica count of a stream or bucket that has to be created
// (MFA_NATS_REPLICAS); values below 1 mean 1. An existing one keeps its own.
func WithReplicas(n int) EnsureOption { return func(o *ensureOptions) { o.replicas = n } }

// WithLogger receives the warning when an existing stream or bucket differs from what mfaflow
// would create; nil means slog.Default.
func WithLogger(log *slog.Logger) EnsureOption { return func(o *ensureOptions) { o.log = log } }

func ensureOpts(opts []EnsureOption) ensureOptions {
	o := ensureOptions{replicas: 1}
	for _, f := range opts {
		f(&o)
	}
	if o.replicas < 1 {
		o.replicas = 1
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	return o
}

// EnsureEventStream returns the MFA_EVENTS stream, creating it (EventStreamConfig with the
// replicas of WithReplicas) when it is missing. An existing stream is left as the operator
// configured it — replicas, limits and the dedupe window are theirs to change — and a drift from
// what mfaflow would create is logged as a warning, not reset. Every publisher calls it at
// start-up so no service depends on another having run first.
func EnsureEventStream(ctx context.Context, js jetstream.JetStream, opts ...EnsureOption) (jetstream.Stream, error) {
	return ensureConfiguredStream(ctx, js, EventStreamConfig(), opts)
}

// EnsureDeliveryStream returns the MFA_DELIVERIES stream (delivery.StreamConfig), creating it
// with the replicas of WithReplicas when it is missing; an existing one is left as the operator
// configured it, as EnsureEventStream does. The publishers of delivery requests and the notifier
// both call it at start-up, so neither depends on the other having run first.
func EnsureDeliveryStream(ctx context.Context, js jetstream.JetStream, opts ...EnsureOption) (jetstream.Stream, error) {
	return ensureConfiguredStream(ctx, js, delivery.StreamConfig(), opts)
}

// ensureConfiguredStream returns the stream want names, creating it as want (with the replicas
// of opts) while JetStream comes up; a drift of an existing one is logged, not reset.
func ensureConfiguredStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, opts []EnsureOption) (jetstream.Stream, error) {
	o := ensureOpts(opts)
	want.Replicas = o.replicas
	var st jetstream.Stream
	err := AwaitJetStream(ctx, js, o.log, "stream "+want.Name, func(ctx context.Context) (err error) {
		st, err = ensureStream(ctx, js, want)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	warnDrift(o.log, "stream", want.Name, streamDrift(want, st.CachedInfo().Config))
	return st, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, want.Name)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	st, err = js.CreateStream(ctx, want)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another replica created it a moment ago, perhaps differently configured.
		return js.Stream(ctx, want.Name)
	}
	return st, err
}

// EnsureKV returns the key-value bucket, creating it with cfg (and the replicas of
// WithReplicas) when it is missing. An existing bucket is left as it is, with a warning when its
// replicas, history, TTL or storage differ from cfg.
//
// A replicated bucket is created without direct gets: a direct get may be answered by any
// replica, and a follower that has not applied the latest write yet (or a node catching up after
// a restart) answers a key written a moment ago as missing — an enrollment just initiated read as
// "no such enrollment". Reads then go to the stream leader, which has every acknowledged write.
// The bucket's creator makes that change right after creating it, and a replica that opens the
// bucket within directGetGrace of its creation makes it too, so a concurrent start cannot keep
// a handle that reads directly.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, opts ...EnsureOption) (jetstream.KeyValue, error) {
	o := ensureOpts(opts)
	cfg.Replicas = o.replicas
	var kv jetstream.KeyValue
	var status jetstream.KeyValueStatus
	err := AwaitJetStream(ctx, js, o.log, "kv bucket "+cfg.Bucket, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = js.KeyValue(ctx, cfg.Bucket)
			}
		}
		if err != nil {
			return err
		}
		if kv, err = noDirectGet(ctx, js, kv, cfg.Bucket); err != nil {
			return err
		}
		status, err = kv.Status(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensure kv bucket %s: %w", cfg.Bucket, err)
	}
	if bs, ok := status.(*jetstream.KeyValueBucketStatus); ok {
		warnDrift(o.log, "kv bucket", cfg.Bucket, kvDrift(cfg, bs.StreamInfo().Config))
	}
	return kv, nil
}

// directGetGrace is how long after a bucket's creation EnsureKV still treats direct gets on it as
// its creator's unfinished work rather than the operator's choice.
const directGetGrace = time.Minute

// noDirectGet turns direct gets off on a replicated bucket made within directGetGrace (by this
// call or a peer starting at the same time) and returns a handle that reads from the leader.
func noDirectGet(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, bucket string) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, err
	}
	info := st.CachedInfo()
	if info.Config.Replicas <= 1 || !info.Config.AllowDirect || time.Since(info.Created) > directGetGrace {
		return kv, nil
	}
	cfg := info.Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("turn off direct gets: %w", err)
	}
	return js.KeyValue(ctx, bucket)
}

// drift is one setting that differs: what mfaflow would create and what the server has.
type drift struct {
	setting    string
	want, have any
}

func streamDrift(want, have jetstream.StreamConfig) []drift {
	var d []drift
	add := func(setting string, w, h any, differ bool) {
		if differ {
			d = append(d, drift{setting, w, h})
		}
	}
	add("replicas", want.Replicas, have.Replicas, want.Replicas != max(have.Replicas, 1))
	add("subjects", want.Subjects, have.Subjects, !slices.Equal(want.Subjects, have.Subjects))
	add("storage", want.Storage.String(), have.Storage.String(), want.Storage != have.Storage)
	add("retention", want.Retention.String(), have.Retention.String(), want.Retention != have.Retention)
	add("max_age", want.MaxAge.String(), have.MaxAge.String(), want.MaxAge != have.MaxAge)
	add("duplicates", want.Duplicates.String(), have.Duplicates.String(), want.Duplicates != have.Duplicates)
	return d
}

func kvDrift(want jetstream.KeyValueConfig, have jetstream.StreamConfig) []drift {
	var d []drift
	add := func(setting string, w, h any, differ bool) {
		if differ {
			d = append(d, drift{setting, w, h})
		}
	}
	history := int64(max(want.History, 1))
	add("replicas", want.Replicas, have.Replicas, want.Replicas != max(have.Replicas, 1))
	add("history", history, have.MaxMsgsPerSubject, history != have.MaxMsgsPerSubject)
	add("ttl", want.TTL.String(), have.MaxAge.String(), want.TTL != have.MaxAge)
	add("storage", want.Storage.String(), have.Storage.String(), want.Storage != have.Storage)
	add("allow_direct", false, have.AllowDirect, have.Replicas > 1 && have.AllowDirect)
	add("limit_marker_ttl", want.LimitMarkerTTL.String(), have.SubjectDeleteMarkerTTL.String(), want.LimitMarkerTTL != have.SubjectDeleteMarkerTTL)
	return d
}

func warnDrift(log *slog.Logger, kind, name string, d []drift) {
	if len(d) == 0 {
		return
	}
	attrs := []any{kind, name}
	for _, x := range d {
		attrs = append(attrs, slog.Group(x.setting, "want", x.want, "have", x.have))
	}
	log.Warn(kind+" differs from mfaflow's configuration; left as it is (change it with the nats CLI if that was not meant)", attrs...)
}

// IsTransient reports whether err is NATS or JetStream being out of reach for a moment: a
// connection that is reconnecting to another node, a stream or bucket without a leader during an
// election (no response from stream, 503 API errors), a request nobody answered in time. Such a
// failure is `unavailable` (retry), never `internal`.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return true
	}
	for _, t := range []error{
		jetstream.ErrNoStreamResponse, jetstream.ErrNoHeartbeat, nats.ErrNoStreamResponse,
		nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionDraining,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, context.DeadlineExceeded,
	} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// KeysFromLeader lists the keys of bucket under filter (a KV key filter such as "u.abc.*") by
// walking the bucket's stream with next-by-subject gets, which the stream leader answers on a
// bucket without direct gets. A KV lister (ListKeysFiltered) reads through an ephemeral consumer
// that may sit on a follower, and a follower catching up after its node restarted lists keys
// written seconds ago as missing. One request per key: for short lists such as a user's devices.
func KeysFromLeader(ctx context.Context, js jetstream.JetStream, bucket, filter string) ([]string, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, err
	}
	return KeysFromStream(ctx, st, bucket, filter)
}

// KeysFromStream is KeysFromLeader on a stream handle the caller keeps (st is the bucket's
// stream, KV_<bucket>): a hot path saves the stream info request that looking the handle up
// costs. A user without keys costs one request.
func KeysFromStream(ctx context.Context, st jetstream.Stream, bucket, filter string) ([]string, error) {
	prefix := "$KV." + bucket + "."
	alive := map[string]bool{}
	var order []string
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(prefix+filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		key := strings.TrimPrefix(m.Subject, prefix)
		if _, seen := alive[key]; !seen {
			order = append(order, key)
		}
		// A delete or purge is a marker message with this header; a put has none.
		alive[key] = m.Header.Get("KV-Operation") == ""
		seq = m.Sequence + 1
	}
	keys := make([]string, 0, len(order))
	for _, k := range order {
		if alive[k] {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
