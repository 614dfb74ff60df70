package kv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go/jetstream"
)

// CounterBucket keeps the registry's hourly counts (SMS limits). Its entries live two hours
// (MaxAge), so the counts of past windows leave by themselves and the bucket stays as large as
// one hour's traffic.
const CounterBucket = "mfa_counters"

// CounterBucketConfig is the counters' bucket as mfaflow creates it.
func CounterBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      CounterBucket,
		Description: "mfaflow device registry: hourly counts (SMS limits)",
		History:     1,
		TTL:         2 * time.Hour,
		Storage:     jetstream.FileStorage,
	}
}

// Counter is device.Counter on a KV bucket: one key per counted key and window, counted up
// with compare-and-set, so replicas share the count.
type Counter struct{ KV jetstream.KeyValue }

var _ device.Counter = Counter{}

func counterKey(key string, window time.Time) string {
	return key + "." + strconv.FormatInt(window.Unix(), 10)
}

func (c Counter) get(ctx context.Context, k string) (int, uint64, error) {
	e, err := c.KV.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil {
		return 0, 0, fmt.Errorf("counter %s: %w", k, err)
	}
	return n, e.Revision(), nil
}

// Count implements device.Counter.
func (c Counter) Count(ctx context.Context, key string, window time.Time) (int, error) {
	k := counterKey(key, window)
	for range 16 {
		n, rev, err := c.get(ctx, k)
		if err != nil {
			return 0, err
		}
		v := []byte(strconv.Itoa(n + 1))
		if rev == 0 {
			_, err = c.KV.Create(ctx, k, v)
		} else {
			_, err = c.KV.Update(ctx, k, v, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n + 1, nil
	}
	return 0, fmt.Errorf("counter %s: %w", k, device.ErrStale)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
