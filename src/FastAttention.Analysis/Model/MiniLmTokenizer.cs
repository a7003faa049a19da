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
        _tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = true });
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
        var ids = _tokenizer.EncodeToIds(text, addSpecialTokens: true).ToArray();
        if (ids.Length > maxTokens)
        {
            ids = [.. ids.AsSpan(0, maxTokens - 1), SepId];
        }
        return ids;
    }

    /// <summary>The vocabulary entry of each id (e.g. <c>[CLS]</c>, <c>attention</c>, <c>##s</c>).</summary>
    public string[] Tokens(IEnumerable<int> ids) => [.. ids.Select(id => (uint)id < (uint)_vocabulary.Length ? _vocabulary[id] : "[?]")];
}
