//go:build !linux

package quic

// SegmentationOffload reports whether quic-go can send with UDP
// segmentation offload: only on Linux.
func SegmentationOffload() (bool, string) { return false, "UDP segmentation offload is Linux only" }
