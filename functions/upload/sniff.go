package function

import (
	"bytes"
	"encoding/binary"
)

// containerType names the audio or video container whose magic the file starts with, or ""
// when it starts like none: upload takes only what is recognisably media, so that a text
// file with a binary byte (a playlist, a list of other files) never reaches convert.
// convert's allowlist of demuxers (functions/convert/media.go) is the same set.
func containerType(b []byte) string {
	at := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case at(4, "ftyp"), at(4, "moov"), at(4, "mdat"), at(4, "wide"), at(4, "free"), at(4, "skip"):
		return "video/mp4" // MP4, MOV, 3GP, M4A: ISO base media boxes
	case at(0, "\x1a\x45\xdf\xa3"):
		return "video/x-matroska" // Matroska, WebM: EBML
	case (at(0, "RIFF") || at(0, "RF64")) && at(8, "AVI "):
		return "video/x-msvideo"
	case (at(0, "RIFF") || at(0, "RF64")) && at(8, "WAVE"):
		return "audio/wav"
	case at(0, "FORM") && (at(8, "AIFF") || at(8, "AIFC")):
		return "audio/aiff"
	case at(0, "\x00\x00\x01\xba"), at(0, "\x00\x00\x01\xb3"):
		return "video/mpeg" // MPEG program stream, MPEG video
	case transportStream(b, 0, 188), transportStream(b, 4, 192):
		return "video/mp2t" // MPEG-TS, M2TS
	case at(0, "FLV\x01"):
		return "video/x-flv"
	case at(0, "OggS"):
		return "audio/ogg"
	case at(0, "fLaC"):
		return "audio/flac"
	case at(0, "\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
		return "video/x-ms-asf" // ASF, WMV, WMA
	case at(0, "ID3"), mpegAudioFrame(b):
		return "audio/mpeg" // MP3 (ADTS AAC shares the frame sync)
	case at(0, "caff"):
		return "audio/x-caf"
	case at(0, "#!AMR"):
		return "audio/amr"
	case at(0, "wvpk"):
		return "audio/x-wavpack"
	case at(0, "MAC "):
		return "audio/x-ape"
	case at(0, "\x0b\x77"):
		return "audio/ac3"
	}
	return ""
}

// transportStream: sync bytes 0x47 at three packet starts (two when the file is shorter).
func transportStream(b []byte, off, packet int) bool {
	n := 0
	for i := off; i < len(b) && n < 3; i += packet {
		if b[i] != 0x47 {
			return false
		}
		n++
	}
	return n >= 2
}

// mpegAudioFrame: an MPEG audio frame header (11 sync bits, a valid bitrate and sample rate)
// followed, when the head holds it, by the sync of a second frame or by more header-like data.
func mpegAudioFrame(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	h := binary.BigEndian.Uint32(b)
	sync := h>>21 == 0x7ff
	bitrate := (h >> 12) & 0xf
	rate := (h >> 10) & 0x3
	version := (h >> 19) & 0x3
	return sync && version != 1 && bitrate != 0xf && rate != 3 && !bytes.Equal(b[:4], []byte{0xff, 0xff, 0xff, 0xff})
}
