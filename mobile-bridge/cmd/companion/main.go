// Command companion is the reference companion app on the command line: it reads an enrollment
// QR code (or its otpauth URI), reports the scan to the mobile bridge named in the URI, proves
// possession with a freshly computed code, and prints the outcome. It is for trying mfaflow
// without a phone, for scripted end-to-end checks, and as a worked example for app developers.
//
// Usage:
//
//	companion enroll (--qr FILE.png | --uri URI) [--name NAME] [--device-id ID] [--platform P] [--json] [--device FILE]
//	companion listen --device FILE [--approve N | --deny [--not-me]] [--once]
//	companion code (--qr FILE.png | --uri URI)
//	companion help
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

const usage = `companion is the mfaflow reference companion app.

Usage:
  companion enroll (--qr FILE | --uri URI) [flags]
        scan the enrollment QR, report it to the bridge, prove the code, enroll
        (with --device FILE: as a push-capable device, its key kept in FILE)
  companion listen --device FILE [--approve N | --deny [--not-me]] [--once]
        keep a device session and answer push sign-in challenges
  companion code (--qr FILE | --uri URI)
        print the current code for the secret in the QR or URI
  companion help
        show this help

FILE is a PNG, JPEG or GIF image, a text file holding a data: URI, or - for stdin.
Run "companion enroll -h" or "companion listen -h" for the flags.

Exit status: 0 on success, 1 when enrollment fails (the reason is printed to
stderr as "error: <code>: <message>"), 2 on a usage error.
`

// maxInputBytes bounds what --qr reads; a QR image is a few kilobytes.
const maxInputBytes = 16 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status so tests can drive the CLI.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "enroll":
		return runEnroll(ctx, args[1:], stdin, stdout, stderr)
	case "code":
		return runCode(args[1:], stdin, stdout, stderr)
	case "listen":
		return runListen(ctx, args[1:], stdin, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// source is the --qr/--uri pair shared by the subcommands.
type source struct {
	qr, uri string
}

func (s *source) register(fs *flag.FlagSet) {
	fs.StringVar(&s.qr, "qr", "", "`FILE` with the enrollment QR code (image or data: URI; - for stdin)")
	fs.StringVar(&s.uri, "uri", "", "the otpauth `URI` itself")
}

// read returns the otpauth URI from whichever source was given.
func (s *source) read(stdin io.Reader) (string, error) {
	if (s.qr == "") == (s.uri == "") {
		return "", errUsage("give exactly one of --qr or --uri")
	}
	if s.uri != "" {
		return s.uri, nil
	}
	var r io.Reader = stdin
	if s.qr != "-" {
		f, err := os.Open(s.qr)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxInputBytes))
	if err != nil {
		return "", err
	}
	if text := strings.TrimSpace(string(data)); strings.HasPrefix(text, "data:") {
		return companion.DecodeQRDataURI(text)
	}
	return companion.DecodeQR(data)
}

func runEnroll(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("companion enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		src     source
		dev     protocol.Device
		asJSON  bool
		timeout time.Duration
		devFile string
	)
	src.register(fs)
	fs.StringVar(&dev.Name, "name", "mfaflow companion", "device `NAME` shown in the user's device list")
	fs.StringVar(&dev.DeviceID, "device-id", "", "device `ID` (default: a random 16-hex id)")
	fs.StringVar(&dev.Platform, "platform", "cli", "device `PLATFORM`")
	fs.BoolVar(&asJSON, "json", false, "print the final ack as JSON instead of text")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	fs.StringVar(&devFile, "device", "", "enroll as a push-capable device and keep its key in `FILE` (mode 0600)")
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() > 0 {
		return fail(stderr, errUsage("unexpected argument "+fs.Arg(0)))
	}
	var (
		key *ecdsa.PrivateKey
		jwk *protocol.JWK
	)
	if devFile != "" {
		k, err := companion.NewDeviceKey()
		if err != nil {
			return fail(stderr, err)
		}
		pub, err := companion.PublicJWK(&k.PublicKey)
		if err != nil {
			return fail(stderr, err)
		}
		key, jwk = k, &pub
	}
	uri, err := src.read(stdin)
	if err != nil {
		return fail(stderr, err)
	}
	if dev.DeviceID == "" {
		dev.DeviceID = randomDeviceID()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The steps of companion.Enroll, spelled out so the scan can be reported on its own line.
	e, err := companion.ParseURI(uri)
	if err != nil {
		return fail(stderr, err)
	}
	if e.ExchangeID == "" || e.BaseURL == "" {
		return fail(stderr, companion.ErrNotBridged)
	}
	c, err := companion.Dial(ctx, e.BaseURL)
	if err != nil {
		return fail(stderr, unavailable{err})
	}
	defer c.Close()
	scan, err := c.Scan(ctx, e.ExchangeID, dev)
	if err != nil {
		return fail(stderr, err)
	}
	if !asJSON {
		fmt.Fprintf(stdout, "scanned: status %s (status_id %s)\n", scan.Status, scan.StatusID)
	}
	code, err := totp.Code(e.Secret, time.Now(), e.Params)
	if err != nil {
		return fail(stderr, err)
	}
	ack, err := c.EnrollWithKey(ctx, e.ExchangeID, code, jwk)
	if err != nil {
		return fail(stderr, err)
	}
	if key != nil {
		d, err := companion.NewDeviceFile(ack.PHID, ack.DeviceID, dev.Name, e.BaseURL, key)
		if err == nil {
			err = companion.SaveDeviceFile(devFile, d)
		}
		if err != nil {
			// Enrolled, but the key is lost: the device works for codes, not for push.
			return fail(stderr, err)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ack); err != nil {
			return fail(stderr, err)
		}
		return 0
	}
	fmt.Fprintf(stdout, "enrolled: ph_id %s device_id %s\n", ack.PHID, ack.DeviceID)
	if key != nil {
		fmt.Fprintf(stdout, "device: push-capable, key saved to %s\n", devFile)
	}
	return 0
}

func runCode(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("companion code", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var src source
	src.register(fs)
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() > 0 {
		return fail(stderr, errUsage("unexpected argument "+fs.Arg(0)))
	}
	uri, err := src.read(stdin)
	if err != nil {
		return fail(stderr, err)
	}
	e, err := companion.ParseURI(uri)
	if err != nil {
		return fail(stderr, err)
	}
	code, err := totp.Code(e.Secret, time.Now(), e.Params)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintln(stdout, code)
	return 0
}

// errUsage is a mistake on the command line, which exits 2 like flag's own errors.
type errUsage string

func (e errUsage) Error() string { return string(e) }

// unavailable marks a failure to reach the bridge, so it is reported with the code a bridge
// would use for "try again later".
type unavailable struct{ err error }

func (u unavailable) Error() string { return u.err.Error() }
func (u unavailable) Unwrap() error { return u.err }

func exitParse(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2 // flag has printed the problem and the flags
}

// fail prints err as "error: <code>: <message>", the same codes a bridge error frame carries, so
// scripts can switch on them whether the failure came from the bridge or from here.
func fail(stderr io.Writer, err error) int {
	var (
		be    *companion.BridgeError
		usage errUsage
		unav  unavailable
	)
	code, msg, status := string(fault.BadRequest), err.Error(), 1
	switch {
	case errors.As(err, &be):
		code, msg = be.Code, be.Message
	case errors.As(err, &usage):
		status = 2
	case errors.As(err, &unav), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code = string(fault.Unavailable)
	case errors.Is(err, companion.ErrConnectionLost), errors.Is(err, companion.ErrClosed):
		code = string(fault.Unavailable)
	}
	fmt.Fprintf(stderr, "error: %s: %s\n", code, strings.TrimPrefix(msg, "companion: "))
	return status
}

func randomDeviceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
