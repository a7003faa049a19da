// The source rewrite that turns a kernel program (the text NVRTC compiles) into C++ that g++ compiles against
// native/emu/fa_emu.h: inline PTX becomes calls into fa_ptx, __shared__ becomes static storage, dynamic shared
// memory becomes a pointer to the emulator's arena, and one exported launcher per kernel is appended. Pure text
// functions, so the rewrite itself is unit-tested.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FastAttention.Tests.Emulation;

/// <summary>An inline-PTX statement the emulator's translator cannot express (the message names it).</summary>
internal sealed class UnsupportedAsmException(string message) : Exception(message);

internal static partial class EmulatorSource
{
    /// <summary>The whole C++ translation unit for <paramref name="program"/> and its kernels.</summary>
    public static string Build(string header, string program, IEnumerable<string> kernelNames)
    {
        var sb = new StringBuilder();
        sb.Append("#line 1 \"fa_emu.h\"\n").Append(header).Append('\n');
        sb.Append(RewriteShared(TranslateAsm(program))).Append('\n');
        sb.Append("#line 1 \"fa_emu_exports\"\n");
        foreach (string name in kernelNames)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"extern \"C\" __attribute__((visibility(\"default\"))) int fa_emu_launch_{name}(const unsigned* grid, const unsigned* block, int dynamic_smem, void** args, int count, int flags, char* error, int error_length)\n")
              .Append(CultureInfo.InvariantCulture,
                $"{{ return fa_emu::launch(\"{name}\", &{name}, grid, block, dynamic_smem, args, count, flags, error, error_length); }}\n");
        }
        return sb.ToString();
    }

    /// <summary>
    /// <c>extern __shared__ T name[];</c> becomes a pointer to the dynamic arena; every other <c>__shared__</c>
    /// becomes <c>fa_emu_shared_storage</c> (static storage), placed after any <c>alignas</c> that followed it
    /// (C++ wants alignment specifiers before the storage class).
    /// </summary>
    public static string RewriteShared(string source)
    {
        string s = DynamicShared().Replace(source, m =>
        {
            string type = StripAlignment().Replace(m.Groups["spec"].Value, " ").Trim();
            string name = m.Groups["name"].Value;
            return $"{type}* const {name} = reinterpret_cast<{type}*>(fa_emu::dynamic_smem);";
        });
        return StaticShared().Replace(s, m => $"{m.Groups["align"].Value} fa_emu_shared_storage");
    }

    [GeneratedRegex(@"\bextern\s+(?:(?:alignas|__align__)\s*\([^()]*\)\s*)*__shared__\s+(?<spec>[^;\[\]{}]*?)\s*\b(?<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;")]
    private static partial Regex DynamicShared();

    [GeneratedRegex(@"\b__shared__\b(?<align>(?:\s*(?:alignas|__align__)\s*\([^()]*\))*)")]
    private static partial Regex StaticShared();

    [GeneratedRegex(@"(?:alignas|__align__)\s*\([^()]*\)|__attribute__\s*\(\([^()]*(?:\([^()]*\)[^()]*)*\)\)")]
    private static partial Regex StripAlignment();

    private sealed record Operand(string Constraint, string Expression)
    {
        public bool IsOutput => Constraint.StartsWith('=') || Constraint.StartsWith('+');

        /// <summary>What the PTX operand %k turns into: the lvalue for outputs, a conversion to the register type for inputs.</summary>
        public string Argument()
        {
            if (IsOutput) return $"({Expression})";
            char letter = Constraint.TrimStart('=', '+', '&')[0];
            return letter switch
            {
                'r' => $"static_cast<fa_emu::u32>({Expression})",
                'h' => $"static_cast<fa_emu::u16>({Expression})",
                'f' => $"static_cast<float>({Expression})",
                'd' => $"static_cast<double>({Expression})",
                'l' => $"fa_ptx::to_u64({Expression})",
                'n' => $"({Expression})",
                _ => throw new UnsupportedAsmException($"asm operand constraint \"{Constraint}\" ({Expression}) is not supported by the emulator"),
            };
        }
    }

    /// <summary>Replaces every <c>asm(...)</c> statement outside comments and strings by calls into <c>fa_ptx</c>; line breaks are kept so line numbers stay right.</summary>
    public static string TranslateAsm(string source)
    {
        var sb = new StringBuilder(source.Length);
        int i = 0;
        while (i < source.Length)
        {
            char c = source[i];
            if (c == '/' && i + 1 < source.Length && source[i + 1] == '/')
            {
                int end = source.IndexOf('\n', i);
                end = end < 0 ? source.Length : end;
                sb.Append(source, i, end - i);
                i = end;
            }
            else if (c == '/' && i + 1 < source.Length && source[i + 1] == '*')
            {
                int end = source.IndexOf("*/", i + 2, StringComparison.Ordinal);
                end = end < 0 ? source.Length : end + 2;
                sb.Append(source, i, end - i);
                i = end;
            }
            else if (c == '"' || c == '\'')
            {
                int end = SkipLiteral(source, i);
                sb.Append(source, i, end - i);
                i = end;
            }
            else if (IsIdentifierStart(c) && (i == 0 || !IsIdentifierPart(source[i - 1])))
            {
                int end = i;
                while (end < source.Length && IsIdentifierPart(source[end])) end++;
                string word = source[i..end];
                if (word is "asm" or "__asm__" or "__asm")
                {
                    int stop = ParseAsm(source, end, out string replacement);
                    sb.Append(replacement);
                    // Keep the line count; a line break continued by a backslash (asm inside a macro) stays continued.
                    for (int k = i; k < stop; k++)
                    {
                        if (source[k] == '\n') sb.Append(k > 0 && source[k - 1] == '\\' ? "\\\n" : "\n");
                    }
                    i = stop;
                }
                else
                {
                    sb.Append(word);
                    i = end;
                }
            }
            else
            {
                sb.Append(c);
                i++;
            }
        }
        return sb.ToString();
    }

    private static bool IsIdentifierStart(char c) => char.IsAsciiLetter(c) || c == '_';
    private static bool IsIdentifierPart(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';

    private static int SkipLiteral(string s, int start)
    {
        char quote = s[start];
        int i = start + 1;
        while (i < s.Length && s[i] != quote)
        {
            if (s[i] == '\\') i++;
            i++;
        }
        return Math.Min(i + 1, s.Length);
    }

    /// <summary>Parses <c>[volatile] ( template : outputs : inputs : clobbers )</c> after the asm keyword; returns the index after ')'.</summary>
    private static int ParseAsm(string s, int pos, out string replacement)
    {
        int i = pos;
        while (true)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
            int w = i;
            while (w < s.Length && IsIdentifierPart(s[w])) w++;
            string q = s[i..w];
            if (q is "volatile" or "__volatile__" or "__volatile" or "inline") { i = w; continue; }
            if (q.Length > 0) throw new UnsupportedAsmException($"asm {q} is not supported by the emulator");
            break;
        }
        if (i >= s.Length || s[i] != '(') throw new UnsupportedAsmException($"asm without '(' near: {Excerpt(s, pos)}");
        int close = MatchingParen(s, i);
        // Line splices (asm inside a macro) are whitespace here.
        string body = s[(i + 1)..close].Replace("\\\r\n", " ", StringComparison.Ordinal).Replace("\\\n", " ", StringComparison.Ordinal);
        List<string> sections = SplitTopLevel(body, ':');
        string template = ConcatLiterals(sections[0]);
        var operands = new List<Operand>();
        for (int k = 1; k <= 2 && k < sections.Count; k++)
        {
            foreach (string item in SplitTopLevel(sections[k], ','))
            {
                string t = item.Trim();
                if (t.Length == 0) continue;
                if (t[0] != '"') throw new UnsupportedAsmException($"asm operand '{t}' (named operands are not supported)");
                int endQuote = SkipLiteral(t, 0);
                string constraint = t[1..(endQuote - 1)];
                string rest = t[endQuote..].Trim();
                if (rest.Length < 2 || rest[0] != '(' || rest[^1] != ')') throw new UnsupportedAsmException($"asm operand '{t}' is malformed");
                operands.Add(new Operand(constraint, rest[1..^1].Trim()));
            }
        }
        replacement = "do { " + TranslateTemplate(template, operands) + "} while (0)";
        return close + 1;
    }

    private static string Excerpt(string s, int pos) => s.Substring(pos, Math.Min(80, s.Length - pos)).ReplaceLineEndings(" ");

    private static int MatchingParen(string s, int open)
    {
        int depth = 0;
        for (int i = open; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '"' || c == '\'') { i = SkipLiteral(s, i) - 1; continue; }
            if (c == '(') depth++;
            else if (c == ')' && --depth == 0) return i;
        }
        throw new UnsupportedAsmException($"asm statement without its closing parenthesis: {Excerpt(s, open)}");
    }

    /// <summary>Splits at <paramref name="separator"/> outside strings, parentheses, brackets and braces.</summary>
    private static List<string> SplitTopLevel(string s, char separator)
    {
        var parts = new List<string>();
        int depth = 0, start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '"' || c == '\'') { i = SkipLiteral(s, i) - 1; continue; }
            if (c is '(' or '[' or '{') depth++;
            else if (c is ')' or ']' or '}') depth--;
            else if (c == separator && depth == 0)
            {
                parts.Add(s[start..i]);
                start = i + 1;
            }
        }
        parts.Add(s[start..]);
        return parts;
    }

    private static string ConcatLiterals(string s)
    {
        var sb = new StringBuilder();
        int i = 0;
        while (i < s.Length)
        {
            if (char.IsWhiteSpace(s[i])) { i++; continue; }
            if (s[i] != '"') throw new UnsupportedAsmException($"asm template is not a string literal: {s.Trim()}");
            int end = SkipLiteral(s, i);
            string content = s[(i + 1)..(end - 1)];
            for (int k = 0; k < content.Length; k++)
            {
                if (content[k] == '\\' && k + 1 < content.Length)
                {
                    k++;
                    sb.Append(content[k] switch { 'n' => '\n', 't' => '\t', _ => content[k] });
                }
                else
                {
                    sb.Append(content[k]);
                }
            }
            i = end;
        }
        return sb.ToString();
    }

    private static readonly Dictionary<string, string> s_regTypes = new(StringComparer.Ordinal)
    {
        [".b16"] = "fa_emu::u16", [".u16"] = "fa_emu::u16", [".s16"] = "short", [".f16"] = "fa_emu::u16",
        [".b32"] = "fa_emu::u32", [".u32"] = "fa_emu::u32", [".s32"] = "int", [".f32"] = "float",
        [".b64"] = "fa_emu::u64", [".u64"] = "fa_emu::u64", [".s64"] = "long long", [".f64"] = "double",
    };

    /// <summary>PTX template text -> C++ statements.</summary>
    private static string TranslateTemplate(string template, List<Operand> operands)
    {
        var sb = new StringBuilder();
        var locals = new HashSet<string>(StringComparer.Ordinal);
        foreach (string raw in template.Split(';'))
        {
            string piece = raw.Trim();
            while (piece.StartsWith('{'))
            {
                sb.Append("{ ");
                piece = piece[1..].TrimStart();
            }
            int closing = 0;
            while (piece.EndsWith('}') && !piece.Contains('{'))
            {
                closing++;
                piece = piece[..^1].TrimEnd();
            }
            if (piece.Length > 0)
            {
                if (piece.StartsWith(".reg", StringComparison.Ordinal)) sb.Append(Declaration(piece, locals));
                else sb.Append(Instruction(piece, operands, locals));
            }
            for (int k = 0; k < closing; k++) sb.Append("} ");
        }
        return sb.ToString();
    }

    private static string Declaration(string piece, HashSet<string> locals)
    {
        string[] words = piece.Split((char[])[' ', '\t', '\n'], 3, StringSplitOptions.RemoveEmptyEntries);
        if (words.Length < 3 || !s_regTypes.TryGetValue(words[1], out string? type))
        {
            throw new UnsupportedAsmException($"PTX register declaration '{piece}' is not supported by the emulator");
        }
        var names = words[2].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        foreach (string n in names)
        {
            if (!n.All(IsIdentifierPart)) throw new UnsupportedAsmException($"PTX register name '{n}' is not supported by the emulator");
            locals.Add(n);
        }
        return $"{type} {string.Join(", ", names.Select(n => n + " = 0"))}; ";
    }

    private static string Instruction(string piece, List<Operand> operands, HashSet<string> locals)
    {
        if (piece.StartsWith('@')) throw new UnsupportedAsmException($"predicated PTX '{piece}' is not supported by the emulator");
        int space = piece.IndexOfAny([' ', '\t', '\n']);
        string opcode = space < 0 ? piece : piece[..space];
        string rest = space < 0 ? "" : piece[(space + 1)..].Trim();
        var shapes = new List<string>();
        var args = new List<string>();
        if (rest.Length > 0)
        {
            foreach (string raw in SplitTopLevel(rest, ','))
            {
                string op = raw.Trim();
                if (op.StartsWith('{'))
                {
                    if (!op.EndsWith('}')) throw new UnsupportedAsmException($"PTX vector operand '{op}' is malformed");
                    string[] elements = op[1..^1].Split(',', StringSplitOptions.TrimEntries);
                    shapes.Add("v" + elements.Length.ToString(CultureInfo.InvariantCulture));
                    args.AddRange(elements.Select(e => Scalar(e, operands, locals, piece)));
                }
                else if (op.StartsWith('['))
                {
                    if (!op.EndsWith(']')) throw new UnsupportedAsmException($"PTX address operand '{op}' is malformed");
                    string inner = op[1..^1].Trim();
                    int plus = inner.IndexOf('+');
                    string address = Scalar(plus < 0 ? inner : inner[..plus].Trim(), operands, locals, piece);
                    if (plus >= 0) address = $"({address} + {Scalar(inner[(plus + 1)..].Trim(), operands, locals, piece)})";
                    shapes.Add("m");
                    args.Add(address);
                }
                else
                {
                    shapes.Add("s");
                    args.Add(Scalar(op, operands, locals, piece));
                }
            }
        }
        string name = opcode.Replace('.', '_') + "__" + string.Join('_', shapes);
        return $"fa_ptx::{name}({string.Join(", ", args)}); ";
    }

    private static string Scalar(string token, List<Operand> operands, HashSet<string> locals, string instruction)
    {
        if (token.StartsWith('%'))
        {
            if (!int.TryParse(token.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out int index) || index >= operands.Count)
            {
                throw new UnsupportedAsmException($"PTX operand '{token}' in '{instruction}' names no asm operand");
            }
            return operands[index].Argument();
        }
        if (locals.Contains(token)) return token;
        if (token.StartsWith("0f", StringComparison.OrdinalIgnoreCase) && token.Length == 10)
        {
            return $"fa_emu::bits_to_float(0x{token[2..]}u)";
        }
        if (token.Length > 0 && (char.IsAsciiDigit(token[0]) || token[0] == '-'))
        {
            return token;
        }
        throw new UnsupportedAsmException($"PTX operand '{token}' in '{instruction}' is not supported by the emulator");
    }
}
