package qr

import (
	"fmt"
	"math/bits"
	"sync"

	"github.com/makiuchi-d/gozxing/qrcode/decoder"
)

// This file computes the module matrix of a byte-mode, level-M QR symbol (ISO/IEC 18004). It
// replaces gozxing's writer, whose generic bit arrays and per-module interface calls made the
// matrix cost several milliseconds; the version tables still come from gozxing's decoder, and
// the mask is chosen as gozxing (ZXing) does, by the lowest penalty over all eight, so the
// symbol is the same one gozxing would draw (TestMatchesGozxing holds it to that).

// versionInfo is what encoding needs of one QR version at error correction level M.
type versionInfo struct {
	total      int   // codewords, data and EC
	ecPerBlock int   // EC codewords per block
	blocks     int   // number of RS blocks
	align      []int // alignment pattern centre coordinates
}

var versions = func() (vs [41]versionInfo) {
	for n := 1; n <= 40; n++ {
		v, err := decoder.Version_GetVersionForNumber(n)
		if err != nil {
			panic(err)
		}
		ec := v.GetECBlocksForLevel(decoder.ErrorCorrectionLevel_M)
		vs[n] = versionInfo{
			total:      v.GetTotalCodewords(),
			ecPerBlock: ec.GetECCodewordsPerBlock(),
			blocks:     ec.GetNumBlocks(),
			align:      v.GetAlignmentPatternCenters(),
		}
	}
	return vs
}()

func (v *versionInfo) dataBytes() int { return v.total - v.ecPerBlock*v.blocks }

// GF(256) with the QR polynomial x^8+x^4+x^3+x^2+1.
var gfExp, gfLog = func() (exp [512]byte, log [256]byte) {
	x := 1
	for i := range 255 {
		exp[i] = byte(x)
		log[x] = byte(i)
		x <<= 1
		if x&0x100 != 0 {
			x ^= 0x11d
		}
	}
	for i := 255; i < 512; i++ {
		exp[i] = exp[i-255]
	}
	return exp, log
}()

// generators[n] is the RS generator polynomial of degree n, highest coefficient (1) omitted.
var generators = func() (g [69][]byte) {
	for n := 1; n < len(g); n++ {
		// Multiply (x - a^0)(x - a^1)...(x - a^(n-1)); coefficients highest first.
		p := []byte{1}
		for i := range n {
			q := make([]byte, len(p)+1)
			for j, c := range p {
				q[j] ^= c
				if c != 0 {
					q[j+1] ^= gfExp[int(gfLog[c])+i]
				}
			}
			p = q
		}
		g[n] = p[1:]
	}
	return g
}()

// rsRemainder writes the n = len(ec) EC codewords of data into ec.
func rsRemainder(data, ec []byte) {
	gen := generators[len(ec)]
	clear(ec)
	for _, d := range data {
		f := d ^ ec[0]
		copy(ec, ec[1:])
		ec[len(ec)-1] = 0
		if f != 0 {
			lf := int(gfLog[f])
			for i, g := range gen {
				ec[i] ^= gfExp[lf+int(gfLog[g])]
			}
		}
	}
}

// matrix is the module grid of one QR, without quiet zone: mods[y*dim+x] is 1 for dark.
type matrix struct {
	dim  int
	mods []byte
}

func (m matrix) dark(x, y int) bool { return m.mods[y*m.dim+x] != 0 }

// scratch is the reusable working memory of encode.
type scratch struct {
	data, codewords, ec []byte
	base, trial         []byte
	lines               []line
}

// encode computes the module matrix of content in byte mode at level M. The returned matrix
// aliases s and is valid until s is reused.
func encode(content string, s *scratch) (matrix, error) {
	if content == "" {
		return matrix{}, errEmpty
	}
	n := len(content)
	ver := 0
	for v := 1; v <= 40; v++ {
		ccBits := 8
		if v >= 10 {
			ccBits = 16
		}
		if n < 1<<ccBits && 4+ccBits+8*n <= 8*versions[v].dataBytes() {
			ver = v
			break
		}
	}
	if ver == 0 {
		return matrix{}, fmt.Errorf("qr: encoding %d bytes: too long for a QR code at level M", n)
	}
	vi := &versions[ver]

	// Data codewords: mode 0100, count, bytes, terminator, padding.
	nd := vi.dataBytes()
	s.data = grow(s.data, nd)
	d := s.data
	i := 0
	if ver < 10 {
		d[0] = 0x40 | byte(n>>4)
		d[1] = byte(n << 4)
		i = 1
	} else {
		d[0] = 0x40 | byte(n>>12)
		d[1] = byte(n >> 4)
		d[2] = byte(n << 4)
		i = 2
	}
	// Each content byte straddles two codewords by four bits.
	for k := range n {
		c := content[k]
		d[i] |= c >> 4
		d[i+1] = c << 4
		i++
	}
	// The low nibble of d[i] is the 4-bit terminator (or what fits of it); then pad bytes.
	i++
	for pad := byte(0xec); i < nd; i++ {
		d[i] = pad
		pad ^= 0xec ^ 0x11
	}

	// Split into blocks, compute EC and interleave.
	nb := vi.blocks
	ecLen := vi.ecPerBlock
	short := vi.total/nb - ecLen // data codewords of a short block
	numShort := nb - vi.total%nb
	s.ec = grow(s.ec, nb*ecLen)
	s.codewords = grow(s.codewords, vi.total)
	cw := s.codewords
	off := 0
	for b := range nb {
		l := short
		if b >= numShort {
			l++
		}
		rsRemainder(d[off:off+l], s.ec[b*ecLen:(b+1)*ecLen])
		off += l
	}
	k := 0
	for j := 0; j <= short; j++ {
		off := 0
		for b := range nb {
			l := short
			if b >= numShort {
				l++
			}
			if j < l {
				cw[k] = d[off+j]
				k++
			}
			off += l
		}
	}
	for j := range ecLen {
		for b := range nb {
			cw[k] = s.ec[b*ecLen+j]
			k++
		}
	}

	l := layoutFor(ver)
	dim := l.dim
	s.base = grow(s.base, dim*dim)
	base := s.base
	copy(base, l.base)
	for bit, p := range l.pos[:len(cw)*8] {
		base[p] = cw[bit>>3] >> (7 - bit&7) & 1
	}
	// Choose the mask with the lowest penalty, as gozxing (ZXing) does.
	s.trial = grow(s.trial, dim*dim)
	applyMask(s.trial, base, l.isData, dim, chooseMask(base, l, s))
	return matrix{dim: dim, mods: s.trial}, nil
}

// layout is what every symbol of one version shares: the function patterns, which modules
// hold data and in which order, and the data modules packed as the mask choice reads them.
// It is computed once per version.
type layout struct {
	dim          int
	base         []byte  // the function patterns (format area as for mask 0); data modules 0
	isData       []byte  // 1 for the modules a mask applies to
	pos          []int32 // the data modules in placement order
	dataR, dataC []line  // isData packed by rows and by columns
}

var layouts [41]struct {
	once sync.Once
	l    *layout
}

func layoutFor(ver int) *layout {
	e := &layouts[ver]
	e.once.Do(func() { e.l = newLayout(ver) })
	return e.l
}

func newLayout(ver int) *layout {
	dim := 17 + 4*ver
	base, fn := make([]byte, dim*dim), make([]byte, dim*dim)
	set := func(x, y int, dark bool) {
		v := byte(0)
		if dark {
			v = 1
		}
		base[y*dim+x] = v
		fn[y*dim+x] = 1
	}
	// Timing patterns, then finders (with separators) over their ends.
	for i := range dim {
		set(6, i, i%2 == 0)
		set(i, 6, i%2 == 0)
	}
	finder := func(cx, cy int) {
		for dy := -4; dy <= 4; dy++ {
			for dx := -4; dx <= 4; dx++ {
				x, y := cx+dx, cy+dy
				if x < 0 || x >= dim || y < 0 || y >= dim {
					continue
				}
				dist := max(abs(dx), abs(dy))
				set(x, y, dist != 2 && dist != 4)
			}
		}
	}
	finder(3, 3)
	finder(dim-4, 3)
	finder(3, dim-4)
	al := versions[ver].align
	for ai, ay := range al {
		for aj, ax := range al {
			last := len(al) - 1
			if ai == 0 && aj == 0 || ai == 0 && aj == last || ai == last && aj == 0 {
				continue
			}
			for dy := -2; dy <= 2; dy++ {
				for dx := -2; dx <= 2; dx++ {
					set(ax+dx, ay+dy, max(abs(dx), abs(dy)) != 1)
				}
			}
		}
	}
	// Reserve the format areas (drawn per mask below) and the dark module.
	drawFormat(base, fn, dim, 0)
	if ver >= 7 {
		rem := ver
		for range 12 {
			rem = rem<<1 ^ (rem>>11)*0x1f25
		}
		bits := ver<<12 | rem
		for i := range 18 {
			dark := bits>>i&1 != 0
			a, b := dim-11+i%3, i/3
			set(a, b, dark)
			set(b, a, dark)
		}
	}

	// Data modules, in two-column strips from the right, alternately upwards and downwards.
	var pos []int32
	for right := dim - 1; right >= 1; right -= 2 {
		if right == 6 {
			right = 5
		}
		upward := (right+1)&2 == 0
		for vert := range dim {
			y := vert
			if upward {
				y = dim - 1 - vert
			}
			for j := range 2 {
				x := right - j
				if p := y*dim + x; fn[p] == 0 {
					pos = append(pos, int32(p))
				}
			}
		}
	}
	// fn becomes the data module mask: 1 where a mask applies.
	for i, f := range fn {
		fn[i] = f ^ 1
	}
	l := &layout{dim: dim, base: base, isData: fn, pos: pos, dataR: make([]line, dim), dataC: make([]line, dim)}
	for i := range dim {
		l.dataR[i] = pack(fn[i*dim:], 1, dim)
		l.dataC[i] = pack(fn[i:], dim, dim)
	}
	return l
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// formatModules calls set for each module of the two copies of the format information (level
// M, mask) with its value.
func formatModules(dim, mask int, set func(x, y int, v byte)) {
	data := 0<<3 | mask // level M is 00
	rem := data
	for range 10 {
		rem = rem<<1 ^ (rem>>9)*0x537
	}
	bits := (data<<10 | rem) ^ 0x5412
	bit := func(i int) byte { return byte(bits >> i & 1) }
	for i := range 6 {
		set(8, i, bit(i))
	}
	set(8, 7, bit(6))
	set(8, 8, bit(7))
	set(7, 8, bit(8))
	for i := 9; i < 15; i++ {
		set(14-i, 8, bit(i))
	}
	for i := range 8 {
		set(dim-1-i, 8, bit(i))
	}
	for i := 8; i < 15; i++ {
		set(8, dim-15+i, bit(i))
	}
}

// drawFormat writes the format information for mask and the dark module into m; fn, if not
// nil, marks them as function modules.
func drawFormat(m, fn []byte, dim, mask int) {
	formatModules(dim, mask, func(x, y int, v byte) {
		m[y*dim+x] = v
		if fn != nil {
			fn[y*dim+x] = 1
		}
	})
	m[(dim-8)*dim+8] = 1
	if fn != nil {
		fn[(dim-8)*dim+8] = 1
	}
}

// line is one row or column of modules as bits, module i at bit i%64 of word i/64; the bits
// past the end of the line are zero. Three separate words rather than an array, so that the
// compiler keeps them in registers.
type line struct{ w0, w1, w2 uint64 }

func (l *line) word(i int) *uint64 {
	switch i >> 6 {
	case 0:
		return &l.w0
	case 1:
		return &l.w1
	default:
		return &l.w2
	}
}

func (l *line) set(i int, v byte) {
	w := l.word(i)
	*w = *w&^(1<<(i&63)) | uint64(v)<<(i&63)
}

func (l *line) get(i int) byte { return byte(*l.word(i) >> (i & 63) & 1) }

// shr shifts towards lower indices: bit i of the result is bit i+k of l, for 0 < k < 64.
func shr(l line, k uint) line {
	return line{l.w0>>k | l.w1<<(64-k), l.w1>>k | l.w2<<(64-k), l.w2 >> k}
}

func shl1(l line) line { return line{l.w0 << 1, l.w1<<1 | l.w0>>63, l.w2<<1 | l.w1>>63} }

func and(a, b line) line    { return line{a.w0 & b.w0, a.w1 & b.w1, a.w2 & b.w2} }
func andNot(a, b line) line { return line{a.w0 &^ b.w0, a.w1 &^ b.w1, a.w2 &^ b.w2} }
func xnor(a, b line) line   { return line{^(a.w0 ^ b.w0), ^(a.w1 ^ b.w1), ^(a.w2 ^ b.w2)} }
func xor(a, b line) line    { return line{a.w0 ^ b.w0, a.w1 ^ b.w1, a.w2 ^ b.w2} }

func count(l line) int {
	return bits.OnesCount64(l.w0) + bits.OnesCount64(l.w1) + bits.OnesCount64(l.w2)
}

// pack returns the line of the n 0/1 bytes src[0], src[stride], src[2*stride], ...
func pack(src []byte, stride, n int) line {
	var w [3]uint64
	for i := range n {
		w[i>>6] |= uint64(src[i*stride]) << (i & 63)
	}
	return line{w[0], w[1], w[2]}
}

// ones returns a line with bits [0, n) set.
func ones(n int) line {
	var l line
	for i := range n {
		l.set(i, 1)
	}
	return l
}

// maskRows[mask][y%12] holds the modules of row y that mask flips, maskCols[mask][x%12] those
// of column x; every mask repeats every 12 modules in both directions.
var maskRows, maskCols = func() (r, c [8][12]line) {
	for mask := range 8 {
		for i := range 12 {
			for j := range 177 {
				if maskBit(mask, j, i) {
					r[mask][i].set(j, 1)
				}
				if maskBit(mask, i, j) {
					c[mask][i].set(j, 1)
				}
			}
		}
	}
	return r, c
}()

// chooseMask returns the mask with the lowest penalty, as gozxing (ZXing) chooses it. base is
// the unmasked matrix of layout l.
func chooseMask(base []byte, l *layout, s *scratch) int {
	dim := l.dim
	if cap(s.lines) < 4*dim {
		s.lines = make([]line, 4*dim)
	}
	ls := s.lines[:4*dim]
	rows, cols, baseR, baseC := ls[:dim], ls[dim:2*dim], ls[2*dim:3*dim], ls[3*dim:]
	dataR, dataC := l.dataR, l.dataC
	for i := range dim {
		baseR[i] = pack(base[i*dim:], 1, dim)
		baseC[i] = pack(base[i:], dim, dim)
	}
	best, bestPenalty := 0, int(^uint(0)>>1)
	for mask := range 8 {
		for i := range dim {
			mr, mc := maskRows[mask][i%12], maskCols[mask][i%12]
			rows[i] = xor(baseR[i], and(mr, dataR[i]))
			cols[i] = xor(baseC[i], and(mc, dataC[i]))
		}
		formatModules(dim, mask, func(x, y int, v byte) {
			rows[y].set(x, v)
			cols[x].set(y, v)
		})
		if p := penalty(rows, cols, dim); p < bestPenalty {
			best, bestPenalty = mask, p
		}
	}
	return best
}

// applyMask writes base with mask applied to its data modules (isData 1), and the format
// information for mask, into dst.
func applyMask(dst, base, isData []byte, dim, mask int) {
	for y := range dim {
		row := y * dim
		mr := &maskRows[mask][y%12]
		b, d, o := base[row:row+dim], isData[row:row+dim], dst[row:row+dim]
		for x := range o {
			o[x] = b[x] ^ mr.get(x)&d[x]
		}
	}
	drawFormat(dst, nil, dim, mask)
}

func maskBit(mask, x, y int) bool {
	switch mask {
	case 0:
		return (x+y)%2 == 0
	case 1:
		return y%2 == 0
	case 2:
		return x%3 == 0
	case 3:
		return (x+y)%3 == 0
	case 4:
		return (x/3+y/2)%2 == 0
	case 5:
		return x*y%2+x*y%3 == 0
	case 6:
		return (x*y%2+x*y%3)%2 == 0
	default:
		return ((x+y)%2+x*y%3)%2 == 0
	}
}

// penalty is ZXing's mask penalty (its reading of ISO/IEC 18004 section 7.8.3), rule for rule,
// so that the chosen mask matches gozxing's, computed on whole lines of bits: rows and cols
// are the same matrix by rows and by columns.
func penalty(rows, cols []line, dim int) int {
	pairs := ones(dim - 1) // positions x with a neighbour x+1
	p, n3 := 0, 0
	for _, ls := range [2][]line{rows, cols} {
		for _, r := range ls {
			// Rule 1: a run of L >= 5 of one colour costs 3 + L-5. It holds L-4 windows of five
			// equal modules, and it starts where such a window does not follow another.
			eq := and(xnor(r, shr(r, 1)), pairs)
			w5 := and(and(eq, shr(eq, 1)), and(shr(eq, 2), shr(eq, 3)))
			p += count(w5) + 2*count(andNot(w5, shl1(w5)))
			// Rule 3: 1011101 with four light modules, or the edge, on either side.
			pat := and(and(andNot(r, shr(r, 1)), and(shr(r, 2), shr(r, 3))), andNot(and(shr(r, 4), shr(r, 6)), shr(r, 5)))
			for w, word := range [3]uint64{pat.w0, pat.w1, pat.w2} {
				for word != 0 {
					x := w*64 + bits.TrailingZeros64(word)
					word &= word - 1
					if lightRun(&r, x-4, x) || lightRun(&r, x+7, x+11) {
						n3++
					}
				}
			}
		}
	}
	p += 40 * n3
	// Rule 2: 2x2 blocks of one colour.
	n2 := 0
	for y := 0; y+1 < dim; y++ {
		v := xnor(rows[y], rows[y+1]) // same colour as the module below
		n2 += count(and(and(and(v, shr(v, 1)), xnor(rows[y], shr(rows[y], 1))), pairs))
	}
	p += 3 * n2
	// Rule 4: distance of the dark proportion from one half, in 5 % steps.
	darkCount := 0
	for _, r := range rows {
		darkCount += count(r)
	}
	total := dim * dim
	p += abs(darkCount*2-total) * 10 / total * 10
	return p
}

// lightRun reports whether modules [from, to) of l are all light; past either end counts as
// light (bits past the end are zero).
func lightRun(l *line, from, to int) bool {
	for i := max(from, 0); i < min(to, 3*64); i++ {
		if l.get(i) != 0 {
			return false
		}
	}
	return true
}
