// WordPiece tokenisation of all-MiniLM-L6-v2 (BERT uncased vocabulary) through Microsoft.ML.Tokenizers.
using Microsoft.ML.Tokenizers;

namespace FastAttention.Analysis.Model;

/// <summary>
/// The tokenizer all-MiniLM-L6-v2 expects: BERT basic tokenisation, lower-casing, accent stripping and WordPiece over
/// the model's vocabulary (<see cref="BertTokenizer"/> of Microsoft.ML.Tokenizers), with <c>[CLS]</c> first and
/// <c>[SEP]</c> last. Longer texts are cut to <see cref="MaxTokens"/> (256, the model's <c>max_seq_length</c>) keeping the
/// final <c>[SEP]</c>, as sentence-transformers does.
/// </summary>
public sealed class MiniLmTokenizer
{
    private readonly BertTokenizer _tokenizer;
    private readonly string[] _vocabulary;

    /// <summary>Tokens per sequence at most, special tokens included.</summary>
    public const int MaxTokens = 256;

    /// <summary>Loads the vocabulary from the model package (<see cref="MiniLmResources"/>).</summary>
    public MiniLmTokenizer()
    {
        using (var stream = MiniLmResources.OpenVocabulary())
        using (var reader = new StreamReader(stream))
        {
            _vocabulary = reader.ReadToEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        }
        using var vocab = MiniLmResources.OpenVocabulary();
        _tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = true, RemoveNonSpacingMarks = true, IndividuallyTokenizeCjk = true });
        ClsId = Array.IndexOf(_vocabulary, "[CLS]");
        SepId = Array.IndexOf(_vocabulary, "[SEP]");
    }

    /// <summary>Id of <c>[CLS]</c>.</summary>
    public int ClsId { get; }
    /// <summary>Id of <c>[SEP]</c>.</summary>
    public int SepId { get; }

    /// <summary>Token ids of <paramref name="text"/>: <c>[CLS] ... [SEP]</c>, at most <paramref name="maxTokens"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxTokens"/> is below 2.</exception>
    public int[] Encode(string text, int maxTokens = MaxTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 2);
        var ids = _tokenizer.EncodeToIds(StripAccents(text), addSpecialTokens: true).ToArray();
        if (ids.Length > maxTokens)
        {
            ids = [.. ids.AsSpan(0, maxTokens - 1), SepId];
        }
        return ids;
    }

    // Base letters of U+00C0..U+00FF and U+0100..U+017F where Unicode decomposes the letter into base + accent
    // (\0 = no decomposition, kept as is: Æ, Ø, ß, Đ, Ł, Œ, ...).
    private const string Latin1Bases = "AAAAAA\0CEEEEIIII\0NOOOOO\0\0UUUUY\0\0aaaaaa\0ceeeeiiii\0nooooo\0\0uuuuy\0y";
    private const string LatinExtendedABases = "AaAaAaCcCcCcCcDd\0\0EeEeEeEeEeGgGgGgGgHh\0\0IiIiIiIiI\0\0\0JjKk\0LlLlLl\0\0\0\0NnNnNn\0\0\0OoOoOo\0\0RrRrRrSsSsSsSsTtTt\0\0UuUuUuUuUuUuWwYyYZzZzZz\0";

    /// <summary>
    /// Accent stripping as BERT uncased does it (NFD, then drop non-spacing marks), done here because the tokenizer's own
    /// normalisation does nothing when the process runs with invariant globalization (this repository's setting): Latin-1
    /// and Latin Extended-A letters map to their base letters by a table, combining marks (U+0300..U+036F and any other
    /// non-spacing mark) are dropped; other scripts pass through unchanged.
    /// </summary>
    public static string StripAccents(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sb = new System.Text.StringBuilder(text.Length);
        foreach (char c in text)
        {
            char mapped = c switch
            {
                >= '\u00C0' and <= '\u00FF' => Latin1Bases[c - 0xC0],
                >= '\u0100' and <= '\u017F' => LatinExtendedABases[c - 0x100],
                _ => '\0',
            };
            if (mapped != '\0') sb.Append(mapped);
            else if (char.GetUnicodeCategory(c) != System.Globalization.UnicodeCategory.NonSpacingMark) sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>The vocabulary entry of each id (e.g. <c>[CLS]</c>, <c>attention</c>, <c>##s</c>).</summary>
    public string[] Tokens(IEnumerable<int> ids) => [.. ids.Select(id => (uint)id < (uint)_vocabulary.Length ? _vocabulary[id] : "[?]")];
}
