// A line diff (longest common subsequence): [{op: " " | "+" | "-", text}].
export function lineDiff(a, b) {
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: " ", text: a[i] }); i += 1; j += 1; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { out.push({ op: "-", text: a[i] }); i += 1; }
    else { out.push({ op: "+", text: b[j] }); j += 1; }
  }
  while (i < n) { out.push({ op: "-", text: a[i] }); i += 1; }
  while (j < m) { out.push({ op: "+", text: b[j] }); j += 1; }
  return out;
}
