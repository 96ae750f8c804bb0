package config

// Area is a group of regions that bandwidth packages are bought for.
type Area struct {
	ID      string
	Regions []Region
	BuiltIn bool
	pos     Pos // where a user-defined area's id stands
}

// Region is one region of an area: the unit that gateways, networks and
// interconnections are placed in.
type Region struct {
	ID   string
	Name string
	Area string
	pos  Pos // where a user-defined region's id stands
}

// builtinAreas is the catalogue of SPEC section 2, rule 7. Users may add
// areas and regions of their own in the config's `areas` list, but may not
// redefine these.
var builtinAreas = []Area{
	{ID: "mainland-china", BuiltIn: true, Regions: []Region{
		{ID: "cn-qingdao", Name: "China (Qingdao)"},
		{ID: "cn-beijing", Name: "China (Beijing)"},
		{ID: "cn-zhangjiakou", Name: "China (Zhangjiakou)"},
		{ID: "cn-shenzhen", Name: "China (Shenzhen)"},
		{ID: "cn-hangzhou", Name: "China (Hangzhou)"},
		{ID: "cn-shanghai", Name: "China (Shanghai)"},
		{ID: "cn-huhehaote", Name: "China (Hohhot)"},
	}},
	{ID: "north-america", BuiltIn: true, Regions: []Region{
		{ID: "us-west-1", Name: "US (Silicon Valley)"},
		{ID: "us-east-1", Name: "US (Virginia)"},
	}},
	{ID: "asia-pacific", BuiltIn: true, Regions: []Region{
		{ID: "cn-hongkong", Name: "Hong Kong"},
		{ID: "ap-southeast-1", Name: "Singapore"},
		{ID: "ap-southeast-3", Name: "Malaysia (Kuala Lumpur)"},
		{ID: "ap-northeast-1", Name: "Japan (Tokyo)"},
		{ID: "ap-south-1", Name: "India (Mumbai)"},
		{ID: "ap-southeast-5", Name: "Indonesia (Jakarta)"},
	}},
	{ID: "europe", BuiltIn: true, Regions: []Region{
		{ID: "eu-central-1", Name: "Germany (Frankfurt)"},
	}},
	{ID: "australia", BuiltIn: true, Regions: []Region{
		{ID: "ap-southeast-2", Name: "Australia (Sydney)"},
	}},
}

// BuiltinAreas returns a copy of the built-in catalogue, each region
// carrying its area.
func BuiltinAreas() []Area {
	out := make([]Area, len(builtinAreas))
	for i, a := range builtinAreas {
		out[i] = Area{ID: a.ID, BuiltIn: true, Regions: make([]Region, len(a.Regions))}
		for j, r := range a.Regions {
			r.Area = a.ID
			out[i].Regions[j] = r
		}
	}
	return out
}
