package ratelimit_test

import (
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ratelimit"
)

// TestSlots: a key holds at most max slots; a release frees one (once, however often it is
// called), and a key that holds none is forgotten.
func TestSlots(t *testing.T) {
	s := ratelimit.NewSlots(2)
	r1, ok1 := s.Acquire("alice")
	_, ok2 := s.Acquire("alice")
	if !ok1 || !ok2 {
		t.Fatal("the first two slots refused")
	}
	if _, ok := s.Acquire("alice"); ok {
		t.Fatal("a third slot granted")
	}
	if _, ok := s.Acquire("bob"); !ok {
		t.Fatal("another key refused")
	}
	r1()
	r1()
	if n := s.Open("alice"); n != 1 {
		t.Fatalf("open %d after one release (called twice), want 1", n)
	}
	r3, ok := s.Acquire("alice")
	if !ok {
		t.Fatal("a slot refused after a release")
	}
	r3()
	if _, ok := s.Acquire("alice"); !ok {
		t.Fatal("refused")
	}
	if s.Len() != 2 {
		t.Fatalf("len %d, want 2", s.Len())
	}
}

func TestSlotsForgetIdleKeys(t *testing.T) {
	s := ratelimit.NewSlots(1)
	for range 1000 {
		release, ok := s.Acquire(ratelimit.Key("user", time.Now().String()))
		if !ok {
			t.Fatal("refused")
		}
		release()
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("%d keys kept with nothing open", n)
	}
}

func TestSlotsZeroIsUnlimited(t *testing.T) {
	var nilSlots *ratelimit.Slots
	for _, s := range []*ratelimit.Slots{ratelimit.NewSlots(0), nilSlots} {
		for range 100 {
			if _, ok := s.Acquire("alice"); !ok {
				t.Fatal("refused with the limit off")
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for wait, want := range map[time.Duration]string{0: "1", 10 * time.Millisecond: "1", 2100 * time.Millisecond: "3", 3 * time.Second: "3"} {
		if got := ratelimit.RetryAfter(wait); got != want {
			t.Errorf("RetryAfter(%v) = %s, want %s", wait, got, want)
		}
	}
}
