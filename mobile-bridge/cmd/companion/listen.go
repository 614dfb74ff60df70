package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/fault"
)

// Reconnect back-off of listen: from minBackoff, doubling to maxBackoff, ±50 % jitter.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

type listenFlags struct {
	device  string
	approve string
	deny    bool
	notMe   bool
	once    bool
}

func runListen(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("companion listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f listenFlags
	fs.StringVar(&f.device, "device", "", "the device `FILE` written by enroll --device (required)")
	fs.StringVar(&f.approve, "approve", "", "approve every challenge with the two-digit `N` instead of asking")
	fs.BoolVar(&f.deny, "deny", false, "deny every challenge instead of asking")
	fs.BoolVar(&f.notMe, "not-me", false, `with --deny: report the sign-in as not started by the user ("not_me")`)
	fs.BoolVar(&f.once, "once", false, "exit after answering one challenge")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	switch {
	case fs.NArg() > 0:
		return fail(stderr, errUsage("unexpected argument "+fs.Arg(0)))
	case f.device == "":
		return fail(stderr, errUsage("--device is required"))
	case f.approve != "" && f.deny:
		return fail(stderr, errUsage("give at most one of --approve and --deny"))
	case f.notMe && !f.deny:
		return fail(stderr, errUsage("--not-me goes with --deny"))
	case f.approve != "" && !twoDigits(f.approve):
		return fail(stderr, errUsage("--approve takes the two digits shown at sign-in"))
	}
	dev, err := companion.LoadDeviceFile(f.device)
	if err != nil {
		return fail(stderr, err)
	}
	l := &listener{f: f, dev: dev, in: bufio.NewScanner(stdin), out: stdout, errOut: stderr, seen: map[string]bool{}}

	backoff := minBackoff
	for {
		done, err := l.session(ctx)
		switch {
		case done:
			return 0
		case ctx.Err() != nil:
			return 0 // interrupted: a normal way to stop listening
		case err != nil && permanent(err):
			return fail(stderr, err)
		case err != nil:
			fmt.Fprintf(stderr, "connection lost (%v); reconnecting\n", strings.TrimPrefix(err.Error(), "companion: "))
		}
		wait := time.Duration(float64(backoff) * (0.5 + rand.Float64()))
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// permanent errors end listen: retrying cannot fix them.
func permanent(err error) bool {
	var be *companion.BridgeError
	if errors.As(err, &be) {
		return be.Code == string(fault.Unauthorized) || be.Code == string(fault.BadRequest) || be.Code == string(fault.Conflict)
	}
	return errors.Is(err, errStdinClosed)
}

var errStdinClosed = errors.New("stdin closed")

type listener struct {
	f      listenFlags
	dev    companion.DeviceFile
	in     *bufio.Scanner
	out    io.Writer
	errOut io.Writer
	seen   map[string]bool // challenges answered (or refused) already
}

// session runs one connection: dial, log in, answer challenges until the connection ends. done
// reports that --once is satisfied.
func (l *listener) session(ctx context.Context) (done bool, err error) {
	c, err := companion.Dial(ctx, l.dev.BridgeURL)
	if err != nil {
		return false, err
	}
	defer c.Close()
	key, err := l.dev.Key() // LoadDeviceFile checked it; decoded per session, not kept around
	if err != nil {
		return false, err
	}
	if _, err := c.Login(ctx, l.dev.PHID, key); err != nil {
		return false, err
	}
	fmt.Fprintf(l.out, "listening: ph_id %s\n", l.dev.PHID)
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-c.Done():
			return false, c.Err()
		case ch := <-c.Challenges():
			if l.seen[ch.ChallengeID] {
				continue
			}
			l.seen[ch.ChallengeID] = true
			answered, err := l.answer(ctx, c, ch)
			if err != nil {
				return false, err
			}
			if answered && l.f.once {
				return true, nil
			}
		}
	}
}

func (l *listener) answer(ctx context.Context, c *companion.Client, ch protocol.PushChallenge) (bool, error) {
	fmt.Fprintf(l.out, "challenge %s: numbers %s", ch.ChallengeID, strings.Join(ch.Numbers, " "))
	if len(ch.Context) > 0 {
		keys := make([]string, 0, len(ch.Context))
		for k := range ch.Context {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(l.out, " %s=%q", k, ch.Context[k])
		}
	}
	fmt.Fprintf(l.out, " expires %s\n", ch.ExpiresAt.Format(time.RFC3339))

	decision, number, reason := protocol.DecisionApprove, l.f.approve, ""
	switch {
	case l.f.deny:
		decision, number = protocol.DecisionDeny, ""
		if l.f.notMe {
			reason = protocol.ReasonNotMe
		}
	case l.f.approve == "":
		var err error
		if decision, number, reason, err = l.ask(); err != nil {
			return false, err
		}
	}
	ack, err := c.Respond(ctx, ch.ChallengeID, decision, number, reason)
	var be *companion.BridgeError
	if errors.As(err, &be) && be.Code != string(fault.Unauthorized) {
		// Answered elsewhere, expired, or gone: this challenge is over; keep listening.
		fmt.Fprintf(l.out, "answer refused: %s: %s\n", be.Code, be.Message)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	fmt.Fprintf(l.out, "answered %s: status %s\n", decision, ack.Status)
	return true, nil
}

// ask reads the user's answer to a challenge from stdin: the two digits shown at sign-in, "deny"
// or "not-me". An empty line asks again (a stray Enter must not deny the user's own sign-in);
// anything else that is not two digits denies.
func (l *listener) ask() (decision, number, reason string, err error) {
	for {
		fmt.Fprint(l.out, "number shown at sign-in (or \"deny\", \"not-me\"): ")
		if !l.in.Scan() {
			return "", "", "", errStdinClosed
		}
		switch text := strings.TrimSpace(l.in.Text()); text {
		case "":
			continue
		case "deny":
			return protocol.DecisionDeny, "", "", nil
		case "not-me":
			return protocol.DecisionDeny, "", protocol.ReasonNotMe, nil
		default:
			if !twoDigits(text) {
				fmt.Fprintln(l.errOut, "not two digits; denying")
				return protocol.DecisionDeny, "", "", nil
			}
			return protocol.DecisionApprove, text, "", nil
		}
	}
}

func twoDigits(s string) bool {
	return len(s) == 2 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9'
}
