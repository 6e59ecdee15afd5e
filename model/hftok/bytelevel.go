package hftok

// GPT-2's byte-level alphabet (openai/gpt-2 encoder.py bytes_to_unicode,
// Hugging Face's bytes_char): each byte is a printable character, itself
// for the printable ASCII and Latin-1 bytes, U+0100 onwards for the rest.
// Byte-level vocabularies spell their tokens in it: 'Ġ' (U+0120) is a
// space.
var (
	byteChar [256]rune         // byte → character
	charByte = map[rune]byte{} // character → byte
)

func init() {
	n := rune(0)
	for b := range 256 {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			byteChar[b] = rune(b)
		} else {
			byteChar[b] = 256 + n
			n++
		}
		charByte[byteChar[b]] = byte(b)
	}
}

// fromByteLevel returns the bytes a byte-level token spells, and false if
// a character of it is outside the alphabet.
func fromByteLevel(tok string) ([]byte, bool) {
	b := make([]byte, 0, len(tok))
	for _, r := range tok {
		c, ok := charByte[r]
		if !ok {
			return nil, false
		}
		b = append(b, c)
	}
	return b, true
}
