"""The character-level word data set of Debian's wamerican (/usr/share/dict/words):
lowercase a-z words of at most 12 letters, right-padded with '.', one token per
character ('a'..'z' -> 0..25, '.' -> 26; the mask token is 27). A fixed seeded split
keeps 90% of the words for training; the rest are held out (generated words found there
are "new" real words)."""
import random

WORDS = "/usr/share/dict/words"
LENGTH = 12
ALPHABET = "abcdefghijklmnopqrstuvwxyz."
PAD = 26
MASK = 27


def all_words():
    words = set()
    with open(WORDS, encoding="utf-8", errors="ignore") as f:
        for line in f:
            w = line.strip()
            if 0 < len(w) <= LENGTH and all("a" <= c <= "z" for c in w):
                words.add(w)
    return sorted(words)


def split(seed=0):
    """(train, held_out) word lists."""
    words = all_words()
    rng = random.Random(seed)
    rng.shuffle(words)
    n = int(0.9 * len(words))
    return sorted(words[:n]), sorted(words[n:])


def encode(word):
    return [ALPHABET.index(c) for c in word] + [PAD] * (LENGTH - len(word))


def decode(tokens):
    """Tokens to a word: letters up to the first pad; None if a letter follows a pad or a mask remains."""
    s = "".join(ALPHABET[t] if 0 <= t < len(ALPHABET) else "?" for t in tokens)
    word = s.split(".")[0]
    if "?" in s or s[len(word):].strip(".") != "" or not word:
        return None
    return word


def ngram_sample(words, order, count, seed=0):
    """`count` words drawn from the character n-gram model (order n: each letter given the
    n - 1 before it, '^' padding the start, '$' ending the word) counted from `words`
    without smoothing; a word longer than LENGTH letters is cut there (and so not valid)."""
    from collections import Counter, defaultdict
    table = defaultdict(Counter)
    for w in words:
        s = "^" * (order - 1) + w + "$"
        for i in range(order - 1, len(s)):
            table[s[i - order + 1:i]][s[i]] += 1
    rng = random.Random(seed)
    cum = {}
    for ctx, counter in table.items():
        letters = sorted(counter)
        weights = [counter[c] for c in letters]
        cum[ctx] = (letters, weights)
    out = []
    for _ in range(count):
        ctx, word = "^" * (order - 1), ""
        while len(word) <= LENGTH:
            letters, weights = cum[ctx]
            c = rng.choices(letters, weights)[0]
            if c == "$":
                break
            word += c
            ctx = (ctx + c)[len(ctx) + 1 - (order - 1):] if order > 1 else ""
        out.append(word[:LENGTH + 1])
    return out
