/**
 * A line diff of two texts (the running and the proposed firewall rules of a host). Pure. Common prefix
 * and suffix are cut first; the rest is a longest-common-subsequence diff, which is exact and small for
 * rule texts (tens to hundreds of lines). Past LCS_CELL_LIMIT cells it reports the middle as removed and
 * added wholesale instead of spending quadratic memory.
 */
import type { RuleLineChange } from '../../api/plan-version.js';

export const LCS_CELL_LIMIT = 4_000_000;

export function lineDiff(before: string, after: string): RuleLineChange[] {
  const a = before === '' ? [] : before.split('\n');
  const b = after === '' ? [] : after.split('\n');
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const out: RuleLineChange[] = [];
  const removed = (i: number) => out.push({ op: '-', line: start + i + 1, text: midA[i] });
  const added = (j: number) => out.push({ op: '+', line: start + j + 1, text: midB[j] });
  if (midA.length * midB.length > LCS_CELL_LIMIT) {
    midA.forEach((_, i) => removed(i));
    midB.forEach((_, j) => added(j));
    return out;
  }
  // lcs[i][j]: length of the LCS of midA[i..] and midB[j..].
  const n = midA.length;
  const m = midB.length;
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) lcs[i][j] = midA[i] === midB[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && midA[i] === midB[j]) {
      i++;
      j++;
    } else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) removed(i++);
    else added(j++);
  }
  return out;
}
