// The subject's tokens in a prompt, by the rule of Geva et al.'s code (`find_token_range`), which
// the seed study uses: decode every token on its own, join the pieces, find the first occurrence
// of the subject string in that text, and take the tokens whose character spans overlap it.
// Character offsets are counted in the same unit on both sides (JS string units), so the rule
// gives the same token range as the Python original whenever the subject is found.

/** Token indices [start, end) of the subject, or null when the subject is not in the decoded prompt. */
export function subjectTokenRange(pieces: string[], subject: string): [number, number] | null {
  if (subject.length === 0) return null;
  const whole = pieces.join("");
  const charLoc = whole.indexOf(subject);
  if (charLoc < 0) return null;
  const charEnd = charLoc + subject.length;
  let loc = 0;
  let start = -1;
  for (let i = 0; i < pieces.length; i++) {
    loc += pieces[i].length;
    if (start < 0 && loc > charLoc) start = i;
    if (loc >= charEnd) return [start, i + 1];
  }
  return null; // unreachable: the subject lies within the joined text
}

/** The subject's token positions, ascending, or null when it is not found. */
export function subjectTokens(pieces: string[], subject: string): number[] | null {
  const r = subjectTokenRange(pieces, subject);
  if (!r) return null;
  return Array.from({ length: r[1] - r[0] }, (_, i) => r[0] + i);
}
