package lab

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Frame is one packet of a capture, as tcpdump saved it.
type Frame struct {
	Time time.Time
	// Data are the captured bytes, starting with the link-layer header; on
	// the lab's interfaces that is Ethernet (link type 1).
	Data []byte
	// Length is the packet's length on the wire, which is more than len(Data)
	// when the snapshot length cut it.
	Length int
}

const (
	pcapHeaderLen = 24
	pcapRecordLen = 16
	// Magic numbers of the classic pcap format, with microsecond and with
	// nanosecond timestamps, read in the byte order of the writer.
	pcapMagicMicros = 0xa1b2c3d4
	pcapMagicNanos  = 0xa1b23c4d
)

// parsePcap reads a classic pcap file as tcpdump -w writes it. The frames'
// Data alias data.
func parsePcap(data []byte) (linkType uint32, frames []Frame, err error) {
	if len(data) < pcapHeaderLen {
		return 0, nil, fmt.Errorf("pcap: %d bytes, shorter than the %d-byte file header", len(data), pcapHeaderLen)
	}
	var order binary.ByteOrder
	var nanos bool
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		switch o.Uint32(data[0:4]) {
		case pcapMagicMicros:
			order = o
		case pcapMagicNanos:
			order, nanos = o, true
		}
	}
	if order == nil {
		return 0, nil, fmt.Errorf("pcap: unknown magic number %#x", data[0:4])
	}
	if major := order.Uint16(data[4:6]); major != 2 {
		return 0, nil, fmt.Errorf("pcap: version %d, want 2", major)
	}
	// The upper bits of the link-type field carry FCS details, not the type.
	linkType = order.Uint32(data[20:24]) & 0xffff

	for offset := pcapHeaderLen; offset < len(data); {
		if len(data)-offset < pcapRecordLen {
			return 0, nil, fmt.Errorf("pcap: record %d at offset %d: truncated header", len(frames), offset)
		}
		header := data[offset : offset+pcapRecordLen]
		seconds := int64(order.Uint32(header[0:4]))
		fraction := int64(order.Uint32(header[4:8]))
		captured := order.Uint32(header[8:12])
		length := order.Uint32(header[12:16])
		offset += pcapRecordLen

		if uint64(captured) > uint64(len(data)-offset) {
			return 0, nil, fmt.Errorf("pcap: record %d at offset %d: %d captured bytes, %d left in the file",
				len(frames), offset-pcapRecordLen, captured, len(data)-offset)
		}
		if captured > length {
			return 0, nil, fmt.Errorf("pcap: record %d at offset %d: %d bytes captured of a %d-byte packet",
				len(frames), offset-pcapRecordLen, captured, length)
		}
		if !nanos {
			fraction *= int64(time.Microsecond)
		}
		if fraction >= int64(time.Second) {
			return 0, nil, fmt.Errorf("pcap: record %d at offset %d: sub-second part %dns out of range",
				len(frames), offset-pcapRecordLen, fraction)
		}
		frames = append(frames, Frame{
			Time:   time.Unix(seconds, fraction),
			Data:   data[offset : offset+int(captured) : offset+int(captured)],
			Length: int(length),
		})
		offset += int(captured)
	}
	return linkType, frames, nil
}
