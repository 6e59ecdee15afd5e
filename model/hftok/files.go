package hftok

import (
	"fmt"
	"maps"
	"slices"
)

// FileNames lists, sorted, the files of a model directory that Load reads
// (TokenizerFile, ConfigFile, ChatTemplateFile): the files a tokenizer is
// made of wherever it travels apart from its directory.
func FileNames() []string {
	return []string{ChatTemplateFile, TokenizerFile, ConfigFile}
}

// MaxFileBytes is the most bytes Load reads of file name, and 0 for a name
// that is not among FileNames.
func MaxFileBytes(name string) int64 {
	switch name {
	case TokenizerFile:
		return MaxTokenizerBytes
	case ConfigFile, ChatTemplateFile:
		return MaxConfigBytes
	}
	return 0
}

// ParseFiles builds the tokenizer that Load would read from a directory
// holding exactly files (file name → bytes): tokenizer.json, which must be
// there, and tokenizer_config.json and chat_template.jinja where present,
// chat_template.jinja used only where tokenizer_config.json has no chat
// template. A name not among FileNames, or a file larger than
// MaxFileBytes allows, is an error wrapping ErrMalformed. Files of the
// result holds the files used. The tokenizer keeps the slices: the caller
// must not modify them afterwards. It never panics.
func ParseFiles(files map[string][]byte) (*Tokenizer, error) {
	for _, name := range slices.Sorted(maps.Keys(files)) {
		max := MaxFileBytes(name)
		switch {
		case max == 0:
			return nil, fmt.Errorf("%w: %.64q is not a tokenizer file (want %v)", ErrMalformed, name, FileNames())
		case int64(len(files[name])) > max:
			return nil, fmt.Errorf("%w: %s: %d bytes, more than the %d allowed", ErrMalformed, name, len(files[name]), max)
		}
	}
	tj, ok := files[TokenizerFile]
	if !ok {
		return nil, fmt.Errorf("%w: no %s among the tokenizer's files", ErrMalformed, TokenizerFile)
	}
	t, err := Parse(tj, files[ConfigFile])
	if err != nil {
		return nil, err
	}
	t.useChatTemplateFile(files[ChatTemplateFile])
	return t, nil
}

// useChatTemplateFile makes tmpl, chat_template.jinja's bytes, the chat
// template where tokenizer_config.json gave none.
func (t *Tokenizer) useChatTemplateFile(tmpl []byte) {
	if t.defaultChatTemplate != "" || len(tmpl) == 0 {
		return
	}
	t.defaultChatTemplate = string(tmpl)
	t.chatTemplates = map[string]string{"default": string(tmpl)}
	t.files[ChatTemplateFile] = tmpl
}
