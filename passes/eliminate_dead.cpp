#include "passes/eliminate_dead.h"

#include <algorithm>
#include <unordered_set>

namespace lwc::passes {

PassResult EliminateDead::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  topoSort(g, m.label());
  std::unordered_set<std::string> needed;
  for (const auto& o : g.outputs) needed.insert(o.name);
  std::vector<bool> live(g.nodes.size(), false);
  for (size_t k = g.nodes.size(); k-- > 0;) {
    const Node& n = g.nodes[k];
    for (const auto& o : n.outputs) live[k] = live[k] || (!o.empty() && needed.count(o));
    if (!live[k]) continue;
    for (const auto& i : n.inputs) needed.insert(i);
    for (const auto& i : implicitInputs(n)) needed.insert(i);
  }
  PassResult r;
  std::vector<Node> kept;
  for (size_t k = 0; k < g.nodes.size(); ++k)
    if (live[k]) kept.push_back(std::move(g.nodes[k]));
  const int64_t nodes_removed = static_cast<int64_t>(g.nodes.size() - kept.size());
  g.nodes = std::move(kept);

  int64_t inits_removed = 0;
  std::vector<std::string> dead_inits;
  for (const auto& [name, t] : g.initializers.items())
    if (!needed.count(name)) dead_inits.push_back(name);
  for (const auto& name : dead_inits) {
    g.initializers.erase(name);
    ++inits_removed;
  }
  std::erase_if(g.inputs, [&](const ValueInfo& v) {
    return std::find(dead_inits.begin(), dead_inits.end(), v.name) != dead_inits.end();
  });

  std::unordered_set<std::string> exists;
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs) exists.insert(o);
  for (const auto& v : g.inputs) exists.insert(v.name);
  for (const auto& [name, t] : g.initializers.items()) exists.insert(name);
  const size_t vi_before = g.value_info.size();
  std::erase_if(g.value_info, [&](const ValueInfo& v) { return !exists.count(v.name); });
  const int64_t vi_removed = static_cast<int64_t>(vi_before - g.value_info.size());

  r.stats = {{"nodes_removed", nodes_removed}, {"initializers_removed", inits_removed},
             {"value_info_removed", vi_removed}};
  r.changed = nodes_removed + inits_removed + vi_removed > 0;
  return r;
}

}  // namespace lwc::passes
