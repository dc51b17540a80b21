package function

import (
	"encoding/binary"
	"io"
	"os"
	"time"
)

// mp3Duration reads the duration of an MP3 that ffmpeg wrote from its Xing/Info header (the
// frame count ffmpeg's MP3 muxer puts in the first frame), as ffprobe computes it, without
// starting ffprobe. ok is false when the file has no such header: the caller probes it then.
func mp3Duration(name string) (d time.Duration, ok bool) {
	f, err := os.Open(name)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	head := make([]byte, 16<<10)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	// An ID3v2 tag first: 10 bytes, its size in 4 bytes of 7 bits.
	if len(head) >= 10 && string(head[:3]) == "ID3" {
		size := int(head[6]&0x7f)<<21 | int(head[7]&0x7f)<<14 | int(head[8]&0x7f)<<7 | int(head[9]&0x7f)
		if head[5]&0x10 != 0 { // footer
			size += 10
		}
		if 10+size >= len(head) {
			return 0, false
		}
		head = head[10+size:]
	}
	if len(head) < 4 || head[0] != 0xff || head[1]&0xe0 != 0xe0 {
		return 0, false
	}
	version := (head[1] >> 3) & 3 // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
	layer := (head[1] >> 1) & 3   // 1: Layer III
	rateIndex := (head[2] >> 2) & 3
	mono := head[3]>>6 == 3
	if version == 1 || layer != 1 || rateIndex == 3 {
		return 0, false
	}
	rate := []int{44100, 48000, 32000}[rateIndex]
	samples, side := 576, 9 // per frame; side information bytes (MPEG-2 and 2.5)
	switch version {
	case 3:
		samples, side = 1152, 32
		if mono {
			side = 17
		}
	case 2:
		rate /= 2
		if !mono {
			side = 17
		}
	case 0:
		rate /= 4
		if !mono {
			side = 17
		}
	}
	at := 4 + side
	if len(head) < at+12 {
		return 0, false
	}
	if tag := string(head[at : at+4]); tag != "Xing" && tag != "Info" {
		return 0, false
	}
	if binary.BigEndian.Uint32(head[at+4:])&1 == 0 { // no frame count
		return 0, false
	}
	frames := int64(binary.BigEndian.Uint32(head[at+8:]))
	return time.Duration(frames * int64(samples) * int64(time.Second) / int64(rate)), true
}
