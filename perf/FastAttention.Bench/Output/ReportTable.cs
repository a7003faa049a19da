// A table as data (title, notes, columns, rows), rendered as markdown (files, pipes) or as a Spectre.Console table (terminal).
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace FastAttention.Bench.Output;

/// <summary>One report block: a heading, explanatory notes, and a table (which may be empty: notes only).</summary>
internal sealed class ReportTable
{
    public ReportTable(string title, int level = 2)
    {
        Title = title;
        Level = level;
    }

    public string Title { get; }

    /// <summary>Markdown heading level (2 = "##").</summary>
    public int Level { get; }

    public List<string> Notes { get; } = [];

    public List<(string Header, bool Right)> Columns { get; } = [];

    public List<string[]> Rows { get; } = [];

    /// <summary>Lines printed as a bullet list (header blocks).</summary>
    public List<string> Bullets { get; } = [];

    public ReportTable Note(string note)
    {
        Notes.Add(note);
        return this;
    }

    /// <summary>Adds columns; a header starting with '>' is right-aligned (the '>' is dropped).</summary>
    public ReportTable Cols(params string[] headers)
    {
        foreach (string h in headers) Columns.Add(h.StartsWith('>') ? (h[1..], true) : (h, false));
        return this;
    }

    public ReportTable Row(params string[] cells)
    {
        if (cells.Length != Columns.Count) throw new ArgumentException($"row has {cells.Length} cells, table '{Title}' has {Columns.Count} columns");
        Rows.Add(cells);
        return this;
    }

    /// <summary>GitHub markdown: heading, bullets, notes as paragraphs, a pipe table.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append(new string('#', Level)).Append(' ').AppendLine(Title);
        sb.AppendLine();
        if (Bullets.Count > 0)
        {
            foreach (string b in Bullets) sb.Append("- ").AppendLine(b);
            sb.AppendLine();
        }
        foreach (string n in Notes)
        {
            sb.AppendLine(n);
            sb.AppendLine();
        }
        if (Columns.Count > 0)
        {
            sb.Append("| ").AppendJoin(" | ", Columns.Select(c => c.Header)).AppendLine(" |");
            sb.Append('|').AppendJoin('|', Columns.Select(c => c.Right ? "---:" : "---")).AppendLine("|");
            foreach (var row in Rows) sb.Append("| ").AppendJoin(" | ", row.Select(c => c.Replace("|", "\\|"))).AppendLine(" |");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    /// <summary>A Spectre.Console renderable: a rule with the title, the bullets and notes dimmed, a rounded table.</summary>
    public IRenderable ToSpectre()
    {
        var parts = new List<IRenderable>
        {
            new Rule($"[bold]{Markup.Escape(Title)}[/]") { Justification = Justify.Left },
        };
        foreach (string b in Bullets) parts.Add(new Markup(" • " + Markup.Escape(b.Replace("`", ""))));
        foreach (string n in Notes) parts.Add(new Markup($"[grey]{Markup.Escape(n)}[/]"));
        if (Columns.Count > 0)
        {
            var table = new Table().Border(TableBorder.Rounded);
            foreach (var (header, right) in Columns)
            {
                var column = new TableColumn(new Markup($"[bold]{Markup.Escape(header)}[/]"));
                if (right) column.RightAligned();
                table.AddColumn(column);
            }
            foreach (var row in Rows) table.AddRow(row.Select(c => (IRenderable)new Text(c)).ToArray());
            parts.Add(table);
        }
        parts.Add(Text.Empty);
        return new Rows(parts);
    }
}
