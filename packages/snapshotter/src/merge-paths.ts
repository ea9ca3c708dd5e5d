/** Paths of `parent` followed by those of `own` it lacks (first-seen order, deduplicated). */
export function mergePaths(parent: readonly string[], own: readonly string[]): string[] {
  if (own.length === 0) return [...parent];
  const seen = new Set(parent);
  const merged = [...parent];
  for (const path of own) {
    if (!seen.has(path)) {
      seen.add(path);
      merged.push(path);
    }
  }
  return merged;
}
