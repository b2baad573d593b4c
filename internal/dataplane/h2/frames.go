package h2

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// The frames the server sends are appended straight into the connection's
// write buffer. x/net's Framer (which reads them here) would build each
// frame in a buffer of its own and hand it to a Writer, a second copy of
// every response body; the formats below are RFC 9113 §4.1 and §6, a
// 9-byte header and a fixed payload for all but HEADERS and DATA.

const frameHeaderLen = 9

// appendFrameHeader appends the header of a frame of length n.
func appendFrameHeader(b []byte, n int, t http2.FrameType, flags http2.Flags, stream uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(t), byte(flags),
		byte(stream>>24)&0x7f, byte(stream>>16), byte(stream>>8), byte(stream))
}

func appendData(b []byte, stream uint32, data []byte, end bool) []byte {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	b = appendFrameHeader(b, len(data), http2.FrameData, flags, stream)
	return append(b, data...)
}

// appendHeaderBlock appends block as a HEADERS frame and as many
// CONTINUATION frames as maxFrame needs.
func appendHeaderBlock(b []byte, stream uint32, block []byte, end bool, maxFrame int) []byte {
	t := http2.FrameHeaders
	for first := true; first || len(block) > 0; first = false {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		var flags http2.Flags
		if first && end {
			flags |= http2.FlagHeadersEndStream
		}
		if len(block) == 0 {
			flags |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, len(frag), t, flags, stream)
		b = append(b, frag...)
		t = http2.FrameContinuation
	}
	return b
}

func appendRSTStream(b []byte, stream uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, stream)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendWindowUpdate(b []byte, stream uint32, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, stream)
	return binary.BigEndian.AppendUint32(b, incr&0x7fffffff)
}

func appendPing(b []byte, ack bool, data [8]byte) []byte {
	var flags http2.Flags
	if ack {
		flags = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, flags, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 8, http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&0x7fffffff)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendSettings(b []byte, ss ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(ss), http2.FrameSettings, 0, 0)
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}
