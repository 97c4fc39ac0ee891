// Columns for a terminal: each cell padded to its column's widest, two spaces between columns.

/** ROWS (the first is the header) as aligned lines, without trailing blanks. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}
