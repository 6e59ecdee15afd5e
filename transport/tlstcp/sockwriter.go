package tlstcp

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// sockWriter is the connection under TLS. A TLS connection whose socket
// write times out part-way through a record cannot write again (TLS cannot
// know how much of the record went out), while a stream, as a net.Conn,
// must write again once its deadline moves. So sockWriter's Write does not
// fail on the stream's write deadline: when the deadline passes part-way
// through a record, it copies the rest and finishes sending it in the
// background, reports the record written, and marks the timeout, which
// stream.Write (writing one record's worth at a time) turns into its own
// timeout. The next Write waits for that flush, within its own deadline.
type sockWriter struct {
	net.Conn // the TCP connection: addresses and Close pass through
	// br reads the connection in large reads, of which TLS takes a record
	// at a time: one system call for many records.
	br *bufio.Reader

	mu       sync.Mutex
	deadline time.Time     // the stream's write deadline
	flushing chan struct{} // closed when the background flush ends; nil when none runs
	err      error         // the background flush's error: the connection is broken
	timedOut bool          // a Write passed the deadline since takeTimeout

	wmu   sync.Mutex // batch and wbuf; held while writing
	batch bool       // gather the records TLS writes (setBatch)
	wbuf  []byte     // records gathered, not yet sent
}

// SetWriteDeadline sets the deadline of the Writes to come and of the
// one under way (a background flush that it interrupts carries on).
// readBuffer is how much one read from the socket may take.
const readBuffer = 256 << 10

func newSockWriter(conn net.Conn) *sockWriter {
	return &sockWriter{Conn: conn, br: bufio.NewReaderSize(conn, readBuffer)}
}

func (c *sockWriter) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *sockWriter) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// expired reports whether the write deadline has passed.
func (c *sockWriter) expired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.deadline.IsZero() && !time.Now().Before(c.deadline)
}

func (c *sockWriter) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// waitFlush waits for a background flush to end, or for the write
// deadline: os.ErrDeadlineExceeded. It returns the flush's error.
func (c *sockWriter) waitFlush() error {
	c.mu.Lock()
	ch, deadline := c.flushing, c.deadline
	c.mu.Unlock()
	if ch != nil {
		if deadline.IsZero() {
			<-ch
		} else {
			timer := time.NewTimer(time.Until(deadline))
			defer timer.Stop()
			select {
			case <-ch:
			case <-timer.C:
				return os.ErrDeadlineExceeded
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// takeTimeout reports whether a Write passed the deadline since the last
// call.
func (c *sockWriter) takeTimeout() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.timedOut
	c.timedOut = false
	return t
}

// writeBatch is the most a batch gathers before it is sent.
const writeBatch = 256 << 10

// setBatch starts gathering the records TLS writes, to send them in few
// system calls, or ends it, sending what was gathered (stream.Write
// gathers the records of one Write).
func (c *sockWriter) setBatch(on bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.batch = on
	if on {
		return nil
	}
	return c.flushLocked()
}

func (c *sockWriter) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batch && len(p) <= writeBatch {
		if len(c.wbuf)+len(p) > writeBatch {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if c.wbuf == nil {
			c.wbuf = make([]byte, 0, writeBatch)
		}
		c.wbuf = append(c.wbuf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	if _, err := c.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flushLocked sends the gathered records; c.wmu is held.
func (c *sockWriter) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	busy, err := c.send(c.wbuf, true)
	if busy {
		c.wbuf = nil // the background flush has it
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// send writes p within the write deadline. When the deadline passes
// part-way, it sends the rest in the background, marks the timeout and
// reports p busy if mine (the background flush owns it; otherwise it
// copies the rest). Other errors break the connection.
func (c *sockWriter) send(p []byte, mine bool) (busy bool, err error) {
	if err := c.waitFlush(); err != nil {
		return false, err
	}
	c.mu.Lock()
	deadline := c.deadline
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(deadline)
	n, err := c.Conn.Write(p)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	// Timed out part-way: keep the records whole.
	rest := p[n:]
	if !mine {
		rest = bytes.Clone(rest)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.flushing, c.timedOut = done, true
	c.mu.Unlock()
	go func() {
		defer close(done)
		var err error
		for len(rest) > 0 {
			c.Conn.SetWriteDeadline(time.Time{})
			var n int
			n, err = c.Conn.Write(rest) // ends when the connection closes
			rest = rest[n:]
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break // a deadline set meanwhile interrupts it; anything else ends it
			}
		}
		c.mu.Lock()
		c.flushing = nil
		if err != nil {
			c.err = err
		}
		c.mu.Unlock()
	}()
	return mine, nil
}
