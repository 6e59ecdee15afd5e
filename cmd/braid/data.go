package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/shard"
)

func dataCommand() *cli.Command {
	def := shard.DefaultConfig()
	return &cli.Command{
		Name:  "data",
		Usage: "prepare, check and distribute datasets: tokenised, content-addressed shards and a manifest",
		Subcommands: []*cli.Command{{
			Name:      "prepare",
			Usage:     "tokenise text files or JSONL into a dataset directory",
			ArgsUsage: " ",
			Description: "Each document (a text file, or one JSONL record) is tokenised, followed by end-of-text,\n" +
				"and put in the train or held-out split by the SHA-256 of its bytes. Each split's documents\n" +
				"are packed into sequences of --seq-len+1 tokens (consecutive ones share a token) and\n" +
				"written as zstd shards named by their SHA-256, with manifest.json. Directories are walked\n" +
				"in lexical order (symlinks and hidden names skipped); the same input gives the same bytes\n" +
				"and dataset id. Binary and empty files are skipped; invalid UTF-8, bad JSONL records and\n" +
				"oversized input fail the command unless --skip-bad. Nothing appears at --out until the\n" +
				"dataset is complete.\n\n" +
				"A text file over --cut-above-mib is cut into documents of about --document-kib, so that a\n" +
				"corpus of one large file still gets a held-out split: at blank lines, whole paragraphs\n" +
				"grouped up to the size (a paragraph over twice the size is cut like text without blank\n" +
				"lines), or, in a file without blank lines, into fixed-size pieces at line ends. The output\n" +
				"says which, and manifest.json counts it (source.cut).\n\n" +
				"--format chat reads JSONL records {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": ...}]},\n" +
				"--format prompt-completion records {\"prompt\": ..., \"completion\": ...} (a user message and the\n" +
				"assistant's answer). Each is rendered with the model's chat template (Llama 3 or ChatML,\n" +
				"recognised from the chat_template of --tokenizer-config, or named by --chat-template), its\n" +
				"control tokens encoded as single ids, and the dataset stores a loss mask: training counts the\n" +
				"loss only on the assistant's answers and the end-of-turn token after each. Records are packed\n" +
				"like documents and may straddle sequences; a record whose prompt is longer than --seq-len is\n" +
				"skipped and counted. The tokenizer must have the template's control tokens (byte-chat has\n" +
				"both templates' for trying this with byte-level models; byte and gpt2 have none).",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "input", Aliases: []string{"i"}, Usage: "text or JSONL `PATH` (file or directory, repeatable)", Required: true},
				&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "dataset `DIR` to create (must not exist, or be empty, unless --overwrite)", Required: true},
				&cli.StringFlag{Name: "tokenizer", Value: def.Tokenizer.Name(), Usage: "byte, gpt2, byte-chat (bytes and the chat templates' control tokens), or a model directory with a tokenizer.json"},
				&cli.IntFlag{Name: "seq-len", Value: def.SeqLen, Usage: "tokens per training sequence (default: the context of models/base-en)"},
				&cli.Float64Flag{Name: "holdout", Value: def.Holdout, Usage: "fraction of documents held out, chosen by hash"},
				&cli.StringFlag{Name: "format", Value: string(def.Format), Usage: "text (a file is a document), jsonl (a line is a record), chat or prompt-completion (a line is a conversation; loss on the answers)"},
				&cli.StringFlag{Name: "field", Value: def.Field, Usage: "with --format jsonl: the field holding a record's text"},
				&cli.StringFlag{Name: "tokenizer-config", Usage: "with --format chat or prompt-completion: the model's tokenizer_config.json `PATH` (or its directory), whose chat_template picks the template"},
				&cli.StringFlag{Name: "chat-template", Usage: "with --format chat or prompt-completion: the template, llama3 or chatml (instead of --tokenizer-config's)"},
				&cli.StringFlag{Name: "name", Usage: "dataset name (default: the base name of the first input)"},
				&cli.BoolFlag{Name: "skip-bad", Usage: "skip and count bad files and records instead of failing"},
				&cli.IntFlag{Name: "shard-mib", Value: int(def.ShardBytes >> 20), Usage: "uncompressed token payload per shard, in MiB"},
				&cli.IntFlag{Name: "cut-above-mib", Value: int(def.CutAbove >> 20), Usage: "with --format text: cut a file of more MiB into documents of about --document-kib (0: a file is always one document)"},
				&cli.IntFlag{Name: "document-kib", Value: int(def.DocumentBytes >> 10), Usage: "the size, in KiB, of the documents a file over --cut-above-mib is cut into"},
				&cli.IntFlag{Name: "max-record-mib", Value: def.MaxRecordBytes >> 20, Usage: "with --format jsonl: longest record, in MiB"},
				overwriteFlag("replace the dataset in a non-empty --out, once the new one is complete"),
			},
			Action: runDataPrepare,
		}, {
			Name:      "verify",
			Usage:     "check a dataset's manifest and every shard's hash and checksum",
			ArgsUsage: "DIR",
			Description: "Names each bad shard (missing, truncated, wrong hash, bad header, bad payload, or a header\n" +
				"that disagrees with the manifest) and exits non-zero if there is any.",
			Action: runDataVerify,
		}, dataPushCommand(), dataRegisterCommand(), dataLsCommand(), dataStatusCommand(), dataRmCommand()},
	}
}

func runDataPrepare(c *cli.Context) error {
	cfg := shard.DefaultConfig()
	tok, err := tokenizerByName(c.String("tokenizer"))
	if err != nil {
		return fmt.Errorf("--tokenizer: %w", err)
	}
	if c.Int("shard-mib") < 1 {
		return fmt.Errorf("--shard-mib %d: must be at least 1", c.Int("shard-mib"))
	}
	if c.Int("max-record-mib") < 1 {
		return fmt.Errorf("--max-record-mib %d: must be at least 1", c.Int("max-record-mib"))
	}
	cfg.Inputs, cfg.Out, cfg.Name = c.StringSlice("input"), c.String("out"), c.String("name")
	cfg.Tokenizer, cfg.SeqLen, cfg.Holdout = tok, c.Int("seq-len"), c.Float64("holdout")
	cfg.Format, cfg.Field, cfg.SkipBad = shard.Format(c.String("format")), c.String("field"), c.Bool("skip-bad")
	cfg.ShardBytes, cfg.MaxRecordBytes = int64(c.Int("shard-mib"))<<20, c.Int("max-record-mib")<<20
	if c.Int("cut-above-mib") < 0 || c.Int("document-kib") < 1 {
		return fmt.Errorf("--cut-above-mib %d and --document-kib %d: want ≥ 0 and ≥ 1", c.Int("cut-above-mib"), c.Int("document-kib"))
	}
	cfg.CutAbove, cfg.DocumentBytes = int64(c.Int("cut-above-mib"))<<20, int64(c.Int("document-kib"))<<10
	if cfg.Format.Masked() {
		if cfg.ChatTemplate, err = chatTemplate(c, c.String("tokenizer-config")); err != nil {
			return fmt.Errorf("--format %s: %w", cfg.Format, err)
		}
	} else if c.IsSet("chat-template") || c.IsSet("tokenizer-config") {
		return fmt.Errorf("--chat-template and --tokenizer-config apply to --format chat and prompt-completion, not %s", cfg.Format)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	out, finish, err := wholeOutDir(c, "out", shard.ManifestName)
	if err != nil {
		return err
	}
	cfg.Out = out

	progress := newProgress(c.App.ErrWriter)
	cfg.Progress = progress.update
	start := time.Now()
	res, err := shard.Prepare(c.Context, cfg)
	elapsed := time.Since(start)
	progress.finish()
	if err = finish(err); err != nil {
		if errors.Is(err, shard.ErrBadInput) {
			return fmt.Errorf("%w (--skip-bad skips and counts bad files and records)", err)
		}
		return err
	}

	res.Dir = c.String("out") // (with --overwrite Prepare wrote beside it)
	m := res.Manifest
	printIssues(c.App.ErrWriter, res.Issues, m.Source.Skipped)
	w := c.App.Writer
	fmt.Fprintf(w, "wrote %s: dataset %s, id %s\n", res.Dir, m.Name, m.ID)
	fmt.Fprintf(w, "  %d documents from %s (%s), tokenizer %s, %d tokens, seq_len %d, holdout %g\n",
		m.Source.Documents, plural(int(m.Source.Files), "file"), megabytes(m.Source.Bytes), m.Tokenizer, m.Source.Tokens, m.SeqLen, m.Holdout)
	if cut := m.Source.Cut; cut != nil {
		fmt.Fprintf(w, "  cut %s over %d MiB into %d documents of about %d KiB: %d at blank lines (paragraphs), %d without blank lines into fixed-size pieces\n",
			plural(int(cut.Paragraphs+cut.Fixed), "file"), cut.Above>>20, cut.Documents, cut.DocumentBytes>>10, cut.Paragraphs, cut.Fixed)
	}
	if m.LossMask {
		fmt.Fprintf(w, "  chat template %s: the loss counts on %d tokens (%.1f%%: the answers and their end-of-turn tokens), %d of them in a sequence without the start of their record\n",
			m.Source.ChatTemplate, m.Source.Trained, 100*float64(m.Source.Trained)/float64(max(m.Source.Tokens, 1)), m.Source.TrainedCut)
		if n := m.Source.Skipped[shard.ReasonPromptTooLong]; n > 0 {
			fmt.Fprintf(w, "  %s skipped: the prompt is longer than --seq-len %d\n", plural(int(n), "record"), m.SeqLen)
		}
	}
	for _, s := range []shard.Split{shard.Train, shard.Heldout} {
		t := m.Totals.Of(s)
		fmt.Fprintf(w, "  %-8s %d sequences in %s (%s), %d tokens dropped after the last sequence\n",
			s, t.Sequences, plural(t.Shards, "shard"), megabytes(t.Bytes), t.Dropped)
	}
	if len(m.Source.Skipped) > 0 {
		fmt.Fprintf(w, "  skipped: %s\n", countsText(m.Source.Skipped))
	}
	warnEmptySplits(c.App.ErrWriter, m)
	secs := elapsed.Seconds()
	fmt.Fprintf(w, "prepared %s in %.2fs: %.1f MB/s of input, %s tokens/s\n",
		megabytes(m.Source.Bytes), secs, float64(m.Source.Bytes)/1e6/secs, si(float64(m.Source.Tokens)/secs))
	return nil
}

// warnEmptySplits warns, one line each, when a split is empty: a dataset
// without held-out sequences cannot measure held-out loss, and one without
// train sequences cannot train.
func warnEmptySplits(w io.Writer, m *shard.Manifest) {
	if m.Totals.Train.Sequences == 0 {
		fmt.Fprintf(w, "warning: the train split is empty: lower --holdout (%g) or --seq-len (%d)\n", m.Holdout, m.SeqLen)
	}
	if m.Totals.Heldout.Sequences == 0 && m.Holdout > 0 {
		fix := "raise --holdout, or give more, smaller documents"
		if m.Source.Format == shard.FormatText {
			fix = "raise --holdout, or cut large files into more documents with a lower --cut-above-mib or --document-kib"
		}
		fmt.Fprintf(w, "warning: the held-out split is empty (none of %d documents was held out at --holdout %g, or they fill no sequence of %d tokens): %s\n",
			m.Source.Documents, m.Holdout, m.SeqLen, fix)
	}
}

// printIssues lists what was left out, the first few of each kind.
func printIssues(w io.Writer, issues []shard.Issue, counts map[shard.Reason]int64) {
	const perReason = 10
	shown := map[shard.Reason]int{}
	for _, is := range issues {
		if shown[is.Reason] < perReason {
			verb := "skipped"
			if is.Reason.Bad() {
				verb = "skipped bad"
			}
			fmt.Fprintf(w, "%s %s\n", verb, is)
		}
		shown[is.Reason]++
	}
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		if n := counts[r]; int64(min(shown[r], perReason)) < n {
			fmt.Fprintf(w, "... and %d more %s (all counted in manifest.json)\n", n-int64(min(shown[r], perReason)), r)
		}
	}
}

// countsText writes counts by reason as "binary 2, empty 1".
func countsText(c map[shard.Reason]int64) string {
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s %d", r, c[r]))
	}
	return strings.Join(parts, ", ")
}

func megabytes(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// si writes x with a k or M suffix: 12.3M.
func si(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// progress shows Prepare's progress on w: a bar when w is a terminal,
// otherwise a plain line at every tenth of the input.
type progress struct {
	w        io.Writer
	bar      *progressbar.ProgressBar // nil unless w is a terminal
	nextTick int64                    // plain lines: the next tenth to report
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, nextTick: 1}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progress) update(pr shard.Progress) {
	desc := fmt.Sprintf("files %d/%d, %d tokens", pr.Files, pr.FilesTotal, pr.Tokens)
	if p.bar == nil && isTerminal(p.w) {
		p.bar = progressbar.NewOptions64(pr.BytesTotal,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
			progressbar.OptionClearOnFinish())
	}
	if p.bar != nil {
		p.bar.Describe(desc)
		p.bar.Set64(pr.Bytes)
		return
	}
	if pr.BytesTotal <= 0 {
		return
	}
	if tenth := pr.Bytes * 10 / pr.BytesTotal; tenth >= p.nextTick {
		fmt.Fprintf(p.w, "prepare: %3d%% of %s, %s\n", tenth*10, megabytes(pr.BytesTotal), desc)
		p.nextTick = tenth + 1
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar.Clear()
	}
}

func runDataVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("data verify: want one dataset DIR, got %d arguments", c.NArg())
	}
	dir := c.Args().First()
	r, err := shard.Verify(dir)
	if err != nil {
		return err
	}
	w := c.App.Writer
	for _, p := range r.Problems {
		fmt.Fprintf(w, "BAD %s\n", p)
	}
	m := r.Manifest
	if !r.OK() {
		return fmt.Errorf("%s: %d of %d shards bad", dir, len(r.Problems), r.Checked)
	}
	mask := ""
	if m.LossMask {
		mask = " with loss masks"
	}
	fmt.Fprintf(w, "ok %s: dataset %s, id %s: %d shards%s (train %d sequences, held-out %d), every hash and checksum good\n",
		dir, m.Name, m.ID, r.Checked, mask, m.Totals.Train.Sequences, m.Totals.Heldout.Sequences)
	return nil
}

// tokenizerByName is model.TokenizerByName, and the byte-chat tokenizer.
func tokenizerByName(name string) (model.Tokenizer, error) {
	if name == chat.ByteTokenizerName {
		return chat.ByteTokenizer{}, nil
	}
	return model.TokenizerFor(name)
}

// chatTemplate returns the template --chat-template names or, without it,
// the one the chat_template of the tokenizer_config.json at config (a
// file or a directory) implements.
func chatTemplate(c *cli.Context, config string) (chat.Template, error) {
	switch {
	case c.IsSet("chat-template"):
		return chat.ByName(c.String("chat-template"))
	case config != "":
		t, err := chat.FromTokenizerConfig(config)
		if err != nil {
			return t, fmt.Errorf("%w (or name the template: --chat-template llama3 or chatml)", err)
		}
		return t, nil
	}
	return chat.Template{}, fmt.Errorf("no chat template: give the model's tokenizer_config.json (--tokenizer-config) or name the template (--chat-template llama3 or chatml)")
}
