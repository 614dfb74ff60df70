package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// writeReports writes the files -md and -svg ask for.
func writeReports() error {
	if *mdOut != "" {
		var b bytes.Buffer
		fmt.Fprintf(&b, "<!-- written by devstack/cmd/bench-load -md on %s, GOMAXPROCS %d -->\n", time.Now().UTC().Format(time.DateTime+" MST"), runtime.GOMAXPROCS(0))
		printTable(&b)
		if err := os.WriteFile(*mdOut, b.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *mdOut)
	}
	if *svgOut != "" {
		if len(signInChart) == 0 {
			fmt.Fprintln(os.Stderr, "no sign-in figures (the phase did not run): no chart written")
			return nil
		}
		if err := os.WriteFile(*svgOut, signInSVG(signInChart), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *svgOut)
	}
	return nil
}

// Chart geometry and colours.
const (
	svgW, svgH         = 760, 330
	panelW, panelH     = 300, 200
	panelTop           = 70
	colSignIn, colBare = "#2b6cb0", "#a0aec0"
)

// signInSVG draws two panels with a log scale each: throughput (sign-ins/s beside bare req/s)
// and p99 latency, against the client counts. Hand-written SVG, no dependencies.
func signInSVG(pts []chartPoint) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold" text-anchor="middle">TOTP sign-ins (start + verify) beside a bare net/http server, same load generator</text>`+"\n", svgW/2)
	legend := func(x int, colour, label string) {
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="12" fill="%s"/><text x="%d" y="42">%s</text>`+"\n", x, colour, x+16, html.EscapeString(label))
	}
	legend(svgW/2-190, colSignIn, "mfaflow: sign-ins (2 requests each)")
	legend(svgW/2+40, colBare, "bare net/http: requests")

	var thr, lat []float64
	for _, p := range pts {
		thr = append(thr, p.signIns, p.bare)
		lat = append(lat, ms64(p.signInP99), ms64(p.bareP99))
	}
	panel(&b, 60, pts, "throughput per second (log scale)", thr, func(v float64) string { return count(v) })
	panel(&b, 60+panelW+70, pts, "p99 latency, ms (log scale)", lat, func(v float64) string { return trimFloat(v) })
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#555">concurrent clients; 2-core development machine, client and servers in one process</text>`+"\n", svgW/2, svgH-8)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// panel draws one bar panel at x: values holds, per point, the sign-in figure then bare's.
func panel(b *bytes.Buffer, x int, pts []chartPoint, title string, values []float64, label func(float64) string) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if v > 0 {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	y := func(v float64) float64 {
		if v <= 0 {
			return panelTop + panelH
		}
		return panelTop + panelH - panelH*(math.Log10(v)-dLo)/(dHi-dLo)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x+panelW/2, panelTop-8, html.EscapeString(title))
	for d := dLo; d <= dHi; d++ {
		v := math.Pow(10, d)
		yy := y(v)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e2e8f0"/>`+"\n", x, yy, x+panelW, yy)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x-4, yy+4, label(v))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x, panelTop+panelH, x+panelW, panelTop+panelH)
	group := float64(panelW) / float64(len(pts))
	const bar = 30.0
	for i, p := range pts {
		gx := float64(x) + group*float64(i) + group/2
		for j, v := range []float64{values[2*i], values[2*i+1]} {
			colour := colSignIn
			if j == 1 {
				colour = colBare
			}
			bx := gx - bar - 2 + float64(j)*(bar+4)
			top := y(v)
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"/>`+"\n", bx, top, bar, panelTop+panelH-top, colour)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", bx+bar/2, top-3, label(v))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", gx, panelTop+panelH+16, p.clients)
	}
}

func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// count is a rate for a chart label: 950, 9.5k, 38k.
func count(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return trimFloat(math.Round(v/100)/10) + "k"
	}
	return fmt.Sprintf("%.0f", v)
}

// trimFloat prints v with two significant decimals at most and no trailing zeros.
func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	if v < 0.01 {
		s = fmt.Sprintf("%.3g", v)
	} else if v >= 10 {
		s = fmt.Sprintf("%.0f", v)
	} else if v >= 1 {
		s = fmt.Sprintf("%.1f", v)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
