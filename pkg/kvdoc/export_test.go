package kvdoc

import "github.com/nats-io/nats.go/jetstream"

// ObserveEntries has r call f with every entry its watch delivers.
func ObserveEntries(r *Relay, f func(jetstream.KeyValueEntry)) { r.observe = f }

// Parked reports whether r has parked key.
func Parked(r *Relay, key string) bool {
	p := r.progress.Load()
	return p != nil && p.parked[key]
}

// DecodePending returns what the relay reads of a stored value: its events' ids and its purge
// mark.
func DecodePending(value []byte) (ids []string, purge bool, err error) {
	v, err := decodePending(value)
	for _, m := range v.Outbox {
		ids = append(ids, m.ID)
	}
	return ids, v.Purge, err
}
