package quic

import (
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SegmentationOffload reports whether quic-go can send with UDP
// segmentation offload (GSO: many datagrams handed to the kernel in one
// system call) on this machine, as quic-go decides it (a kernel that knows
// UDP_SEGMENT, QUIC_GO_DISABLE_GSO unset), and if not, why. quic-go has no
// receive-side coalescing (GRO), and its datagrams are at most 1452 bytes
// whatever the path's MTU: per-datagram cost is what caps QUIC's
// throughput, and why bulk traffic travels on transport/tlstcp.
func SegmentationOffload() (bool, string) {
	if off, err := strconv.ParseBool(os.Getenv("QUIC_GO_DISABLE_GSO")); err == nil && off {
		return false, "QUIC_GO_DISABLE_GSO is set"
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return false, "no UDP socket to ask: " + err.Error()
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return false, err.Error()
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false, err.Error()
	}
	if serr != nil {
		return false, "the kernel refuses UDP_SEGMENT: " + serr.Error()
	}
	return true, ""
}
