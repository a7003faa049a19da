// BlockSparseMask builders on small hand-checked layouts, density, validation, index errors.

namespace FastAttention.Tests.Types;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class BlockSparseMaskTests
{
    /// <summary>Renders head <paramref name="head"/> as rows of 0/1 separated by '/'.</summary>
    private static string Grid(BlockSparseMask m, int head = 0)
    {
        var rows = new List<string>();
        for (int q = 0; q < m.QueryBlocks; q++)
        {
            var row = new char[m.KeyBlocks];
            for (int k = 0; k < m.KeyBlocks; k++) row[k] = m.IsKept(head, q, k) ? '1' : '0';
            rows.Add(new string(row));
        }
        return string.Join("/", rows);
    }

    private static void AssertGeometry(BlockSparseMask m, int heads, int qBlocks, int kBlocks, int bq, int bk)
    {
        Assert.Multiple(() =>
        {
            Assert.That(m.Heads, Is.EqualTo(heads), "Heads");
            Assert.That(m.QueryBlocks, Is.EqualTo(qBlocks), "QueryBlocks");
            Assert.That(m.KeyBlocks, Is.EqualTo(kBlocks), "KeyBlocks");
            Assert.That(m.BlockSizeQ, Is.EqualTo(bq), "BlockSizeQ");
            Assert.That(m.BlockSizeK, Is.EqualTo(bk), "BlockSizeK");
        });
    }

    [Test]
    public void LocalUnitBlocksIsABand()
    {
        var m = BlockSparseMask.Local(4, 4, 1, 1, 1, 0);
        AssertGeometry(m, 1, 4, 4, 1, 1);
        Assert.That(Grid(m), Is.EqualTo("1000/1100/0110/0011"));
        Assert.That(m.Density, Is.EqualTo(7.0 / 16));
    }

    [Test]
    public void LocalBottomRightAlignedWhenSkExceedsSq()
    {
        // Sq = 8, Sk = 12, blocks 4x4: diag(0) = floor((3 + 4) / 4) = 1, diag(1) = floor((7 + 4) / 4) = 2.
        var m = BlockSparseMask.Local(8, 12, 4, 4, 1, 0);
        AssertGeometry(m, 1, 2, 3, 4, 4);
        Assert.That(Grid(m), Is.EqualTo("110/011"));
    }

    [Test]
    public void LocalWhenSqExceedsSkLeavesEarlyRowsEmpty()
    {
        // Sq = 12, Sk = 4, blocks 4x2: diag = floor((last row + 4 - 12) / 2) = -3, -1, 1.
        var m = BlockSparseMask.Local(12, 4, 4, 2, 0, 0);
        AssertGeometry(m, 1, 3, 2, 4, 2);
        Assert.That(Grid(m), Is.EqualTo("00/00/01"));
        Assert.That(m.Density, Is.EqualTo(1.0 / 6));
    }

    [Test]
    public void LocalWithPartialLastBlocks()
    {
        // Sq = Sk = 5, blocks 2x2 (3 x 3, last ones partial): diag = 0, 1, floor(4 / 2) = 2.
        var m = BlockSparseMask.Local(5, 5, 2, 2, 0, 1);
        AssertGeometry(m, 1, 3, 3, 2, 2);
        Assert.That(Grid(m), Is.EqualTo("110/011/001"));
    }

    [Test]
    public void LocalWithUnequalBlockSizes()
    {
        // Sq = 6 in blocks of 3, Sk = 6 in blocks of 2: diag(0) = floor(2 / 2) = 1, diag(1) = floor(5 / 2) = 2.
        var m = BlockSparseMask.Local(6, 6, 3, 2, 1, 0);
        AssertGeometry(m, 1, 2, 3, 3, 2);
        Assert.That(Grid(m), Is.EqualTo("110/011"));
    }

    [Test]
    public void LocalPerHeadRepeatsTheLayout()
    {
        var m = BlockSparseMask.Local(4, 4, 1, 1, 0, 1, heads: 3);
        AssertGeometry(m, 3, 4, 4, 1, 1);
        for (int h = 0; h < 3; h++) Assert.That(Grid(m, h), Is.EqualTo("1100/0110/0011/0001"), $"head {h}");
    }

    [Test]
    public void StridedAddsBlocksAtMultiplesOfTheStride()
    {
        // Local band [diag-1, diag] plus every block whose distance to the diagonal is a multiple of 3 (either side).
        var m = BlockSparseMask.Strided(6, 6, 1, 1, 1, 0, 3);
        AssertGeometry(m, 1, 6, 6, 1, 1);
        Assert.That(Grid(m), Is.EqualTo("100100/110010/011001/101100/010110/001011"));
        Assert.That(m.Density, Is.EqualTo(17.0 / 36));
    }

    [Test]
    public void StridedWithStrideOneKeepsEverything()
    {
        var m = BlockSparseMask.Strided(10, 7, 3, 2, 0, 0, 1);
        Assert.That(m.Density, Is.EqualTo(1.0));
    }

    [Test]
    public void StridedWithBlocks()
    {
        // Sq = Sk = 16, blocks 4x4 -> 4x4 layout, diag = qb; stride 2, no band beyond the diagonal.
        var m = BlockSparseMask.Strided(16, 16, 4, 4, 0, 0, 2);
        Assert.That(Grid(m), Is.EqualTo("1010/0101/1010/0101"));
    }

    [Test]
    public void DenseKeepsEverything()
    {
        var m = BlockSparseMask.Dense(17, 33, 4, 8, heads: 2);
        AssertGeometry(m, 2, 5, 5, 4, 8);
        Assert.That(m.Density, Is.EqualTo(1.0));
        Assert.That(m.ToArray().Cast<bool>(), Is.All.True);
    }

    [Test]
    public void RandomIsReproducibleFromItsSeed()
    {
        var a = BlockSparseMask.Random(256, 256, 16, 16, 3, seed: 42, heads: 2);
        var b = BlockSparseMask.Random(256, 256, 16, 16, 3, seed: 42, heads: 2);
        var c = BlockSparseMask.Random(256, 256, 16, 16, 3, seed: 43, heads: 2);
        Assert.That(b.ToArray(), Is.EqualTo(a.ToArray()), "same seed, same layout");
        Assert.That(c.ToArray(), Is.Not.EqualTo(a.ToArray()), "another seed, another layout");
        Assert.That(Grid(a, 1), Is.Not.EqualTo(Grid(a, 0)), "each head draws its own blocks");
    }

    [TestCase(256, 256, 16, 16, 3)]
    [TestCase(100, 300, 10, 20, 4)]
    [TestCase(64, 64, 8, 8, 0)]
    [TestCase(64, 48, 8, 16, 5)]
    [TestCase(48, 64, 16, 8, 8)]
    public void RandomKeepsTheDiagonalAndTheRequestedCount(int sq, int sk, int bq, int bk, int perRow)
    {
        var m = BlockSparseMask.Random(sq, sk, bq, bk, perRow, seed: 7, heads: 3);
        int kb = m.KeyBlocks, take = Math.Min(perRow, kb);
        for (int h = 0; h < 3; h++)
        {
            for (int q = 0; q < m.QueryBlocks; q++)
            {
                int lastRow = Math.Min((q + 1) * bq, sq) - 1;
                int diag = (int)Math.Floor((lastRow + sk - sq) / (double)bk);
                int kept = Enumerable.Range(0, kb).Count(k => m.IsKept(h, q, k));
                bool diagInRange = diag >= 0 && diag < kb;
                if (diagInRange) Assert.That(m.IsKept(h, q, diag), Is.True, $"diagonal block of head {h}, row {q}");
                int max = Math.Min(kb, take + (diagInRange ? 1 : 0));
                Assert.That(kept, Is.InRange(take, max), $"kept blocks in head {h}, row {q}");
            }
        }
    }

    [Test]
    public void RandomWithMoreBlocksPerRowThanExistKeepsAll()
    {
        var m = BlockSparseMask.Random(40, 40, 8, 8, 100, seed: 1);
        Assert.That(m.Density, Is.EqualTo(1.0));
    }

    [Test]
    public void RandomWithZeroBlocksPerRowKeepsOnlyTheDiagonal()
    {
        var m = BlockSparseMask.Random(4, 4, 1, 1, 0, seed: 99);
        Assert.That(Grid(m), Is.EqualTo("1000/0100/0010/0001"));
    }

    [Test]
    public void CustomLayoutIsRowMajorAndCopied()
    {
        bool[] keep = [true, false, false, true, true, true, /* head 1 */ false, false, true, false, false, true];
        var m = new BlockSparseMask(keep, heads: 2, queryBlocks: 2, keyBlocks: 3, blockSizeQ: 5, blockSizeK: 7);
        keep[0] = false; // the layout owns a copy
        AssertGeometry(m, 2, 2, 3, 5, 7);
        Assert.That(Grid(m, 0), Is.EqualTo("100/111"));
        Assert.That(Grid(m, 1), Is.EqualTo("001/001"));
        Assert.That(m.Density, Is.EqualTo(6.0 / 12));
    }

    [Test]
    public void FromArrayAndToArrayRoundTrip()
    {
        var flags = new bool[2, 3, 4];
        var rng = new Reference.Rng(3);
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 3; q++)
                for (int k = 0; k < 4; k++)
                    flags[h, q, k] = rng.NextBool(0.5);
        var m = BlockSparseMask.FromArray(flags, 16, 32);
        AssertGeometry(m, 2, 3, 4, 16, 32);
        Assert.That(m.ToArray(), Is.EqualTo(flags));
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 3; q++)
                for (int k = 0; k < 4; k++)
                    Assert.That(m.IsKept(h, q, k), Is.EqualTo(flags[h, q, k]), $"[{h}, {q}, {k}]");
        flags[0, 0, 0] = !flags[0, 0, 0];
        Assert.That(m.IsKept(0, 0, 0), Is.Not.EqualTo(flags[0, 0, 0]), "FromArray copies");
    }

    [Test]
    public void SharedLayoutIgnoresTheHead()
    {
        var m = BlockSparseMask.Local(4, 4, 1, 1, 0, 0);
        Assert.That(m.IsKept(7, 2, 2), Is.True);
        Assert.That(m.IsKept(-1, 2, 1), Is.False);
    }

    [TestCase(0, -1, 0)]
    [TestCase(0, 3, 0)]
    [TestCase(0, 0, -1)]
    [TestCase(0, 0, 4)]
    [TestCase(2, 0, 0)]
    [TestCase(-1, 0, 0)]
    public void IsKeptOutsideTheLayoutThrows(int head, int q, int k)
    {
        var m = BlockSparseMask.Dense(3, 4, 1, 1, heads: 2);
        var ex = Assert.Throws<IndexOutOfRangeException>(() => m.IsKept(head, q, k))!;
        Assert.That(ex.Message, Does.Contain($"({head}, {q}, {k})").And.Contain("[2, 3, 4]"));
    }

    [Test]
    public void ConstructorValidation()
    {
        bool[] four = new bool[4];
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentException>(() => _ = new BlockSparseMask(four, 1, 2, 3, 1, 1))!.ParamName, Is.EqualTo("keep"));
            Assert.That(Assert.Throws<ArgumentException>(() => _ = new BlockSparseMask(four, 1, 2, 3, 1, 1))!.Message, Does.Contain("6").And.Contain("4"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BlockSparseMask(four, 0, 2, 2, 1, 1))!.ParamName, Is.EqualTo("heads"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BlockSparseMask(four, 1, -2, -2, 1, 1))!.ParamName, Is.EqualTo("queryBlocks"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BlockSparseMask(four, 1, 2, 0, 1, 1))!.ParamName, Is.EqualTo("keyBlocks"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BlockSparseMask(four, 1, 2, 2, 0, 1))!.ParamName, Is.EqualTo("blockSizeQ"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BlockSparseMask(four, 1, 2, 2, 1, -1))!.ParamName, Is.EqualTo("blockSizeK"));
        });
    }

    [Test]
    public void FromArrayValidation()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentNullException>(() => BlockSparseMask.FromArray(null!, 1, 1))!.ParamName, Is.EqualTo("keep"));
            // Documented: "A dimension or block size is not positive" -> ArgumentOutOfRangeException.
            Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.FromArray(new bool[1, 2, 2], 0, 4), "block size 0");
            Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.FromArray(new bool[1, 2, 2], 4, -1), "block size -1");
            Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.FromArray(new bool[0, 2, 2], 4, 4), "zero heads");
            Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.FromArray(new bool[1, 0, 2], 4, 4), "zero query blocks");
        });
    }

    [Test]
    public void BuilderValidation()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Local(4, 4, 1, 1, -1, 0))!.ParamName, Is.EqualTo("leftBlocks"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Local(4, 4, 1, 1, 0, -1))!.ParamName, Is.EqualTo("rightBlocks"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Local(0, 4, 1, 1, 0, 0))!.ParamName, Is.EqualTo("seqQ"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Local(4, 0, 1, 1, 0, 0))!.ParamName, Is.EqualTo("seqK"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Dense(4, 4, 0, 1))!.ParamName, Is.EqualTo("blockSizeQ"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Dense(4, 4, 1, 0))!.ParamName, Is.EqualTo("blockSizeK"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Dense(4, 4, 1, 1, heads: 0))!.ParamName, Is.EqualTo("heads"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Strided(4, 4, 1, 1, 0, 0, 0))!.ParamName, Is.EqualTo("stride"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Strided(4, 4, 1, 1, -2, 0, 2))!.ParamName, Is.EqualTo("leftBlocks"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Random(4, 4, 1, 1, -1, 0))!.ParamName, Is.EqualTo("blocksPerRow"));
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => BlockSparseMask.Random(-4, 4, 1, 1, 1, 0))!.ParamName, Is.EqualTo("seqQ"));
        });
    }

    [TestCase(37, 53, 3, 2)]
    [TestCase(53, 37, 0, 4)]
    [TestCase(20, 20, 5, 0)]
    public void LocalWithUnitBlocksIsTheSlidingWindowRule(int sq, int sk, int left, int right)
    {
        var m = BlockSparseMask.Local(sq, sk, 1, 1, left, right);
        for (int i = 0; i < sq; i++)
            for (int j = 0; j < sk; j++)
            {
                int diag = i + sk - sq;
                bool inWindow = j >= diag - left && j <= diag + right;
                Assert.That(m.IsKept(0, i, j), Is.EqualTo(inWindow), $"query {i}, key {j}");
            }
    }
}
